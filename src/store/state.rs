//! The in-memory mirror of the store, grouped per API. Two copies are
//! kept, each changed only by committed batches through [`State::apply`]:
//! the management API's (validation and reads; applied right after its
//! own commit, and from the batches the publisher forwards, which with a
//! shared store include other nodes' commits) and the snapshot
//! publisher's (applied from the change feed, then compiled into routes).
//! The same batches in the same order give the same state; each copy
//! knows the [`State::version`] of the last batch it holds.
//!
//! May import: the store's model.

use crate::store::model::*;
use std::collections::{BTreeMap, HashMap};

#[derive(Clone, Debug, Default)]
pub struct ApiState {
    pub api: Option<Api>,
    pub resources: BTreeMap<String, Resource>,
    /// Keyed by (resource id, method type).
    pub methods: BTreeMap<(String, MethodType), Method>,
    pub deployments: BTreeMap<String, Deployment>,
    /// Keyed by stage name.
    pub stages: BTreeMap<String, Stage>,
    pub access_controls: BTreeMap<String, AccessControl>,
    pub auths: BTreeMap<String, Auth>,
    pub resource_policy: Option<ResourcePolicy>,
    pub usage_plans: BTreeMap<String, UsagePlan>,
    pub api_keys: BTreeMap<String, ApiKey>,
}

impl ApiState {
    pub fn api(&self) -> Option<&Api> {
        self.api.as_ref()
    }
    pub fn root(&self) -> Option<&Resource> {
        self.resources.values().find(|r| r.is_root())
    }
    pub fn default_access_control(&self) -> Option<&AccessControl> {
        self.access_controls.values().find(|a| a.is_default)
    }
    pub fn methods_of<'a>(&'a self, resource_id: &'a str) -> impl Iterator<Item = &'a Method> + 'a {
        self.methods
            .range((resource_id.to_string(), MethodType::GET)..)
            .take_while(move |((rid, _), _)| rid == resource_id)
            .map(|(_, m)| m)
    }
    pub fn children_of<'a>(
        &'a self,
        resource_id: &'a str,
    ) -> impl Iterator<Item = &'a Resource> + 'a {
        self.resources
            .values()
            .filter(move |r| r.parent_id == resource_id)
    }
    /// The resource and all its descendants.
    pub fn subtree(&self, resource_id: &str) -> Vec<&Resource> {
        let mut out = Vec::new();
        let mut todo = vec![resource_id.to_string()];
        while let Some(id) = todo.pop() {
            if let Some(r) = self.resources.get(&id) {
                out.push(r);
                todo.extend(self.children_of(&id).map(|c| c.id.clone()));
            }
        }
        out
    }
    pub fn stages_of_access_control<'a>(
        &'a self,
        ac_id: &'a str,
    ) -> impl Iterator<Item = &'a Stage> + 'a {
        self.stages
            .values()
            .filter(move |s| s.access_control_id == ac_id)
    }
    pub fn keys_of_plan<'a>(&'a self, plan_id: &'a str) -> impl Iterator<Item = &'a ApiKey> + 'a {
        self.api_keys
            .values()
            .filter(move |k| k.usage_plan_id == plan_id)
    }
    /// Stages whose active deployment is this one.
    pub fn stages_on_deployment<'a>(
        &'a self,
        dep_id: &'a str,
    ) -> impl Iterator<Item = &'a Stage> + 'a {
        self.stages
            .values()
            .filter(move |s| s.deployment_id == dep_id)
    }
}

impl ApiState {
    /// Whether a method of the API, or of a deployment a stage serves,
    /// integrates the function.
    pub fn uses_function(&self, function_id: &str) -> bool {
        let is = |m: &Method| m.function_id.as_deref() == Some(function_id);
        self.methods.values().any(is)
            || self
                .stages
                .values()
                .filter_map(|s| self.deployments.get(&s.deployment_id))
                .any(|d| d.methods.iter().any(|dm| is(&dm.method)))
    }
}

#[derive(Clone, Debug, Default)]
pub struct State {
    /// The store version of the last batch applied (or loaded).
    pub version: crate::store::Version,
    pub apis: HashMap<String, ApiState>,
    /// Registered functions by id (account-scoped, not under an API).
    pub functions: BTreeMap<String, Function>,
    /// PrivateLink endpoints by id (account-scoped, not under an API).
    pub privatelink_endpoints: BTreeMap<String, PrivatelinkEndpoint>,
    /// Custom domain names by name (account-scoped, not under an API).
    pub domain_names: BTreeMap<String, DomainName>,
    /// Base path mappings by [`BasePathMapping::key`]: a domain's are
    /// adjacent, in base path order.
    pub base_path_mappings: BTreeMap<String, BasePathMapping>,
    /// How many APIs each account has under each name (normally 0 or 1),
    /// kept by [`State::apply`] so that Create Api's name check does not
    /// scan every API ([`State::api_name_taken`]).
    api_names: HashMap<String, HashMap<String, usize>>,
}

impl State {
    pub fn from_entities(entities: Vec<Entity>) -> State {
        let mut s = State::default();
        for e in entities {
            s.put(e);
        }
        // Drop children whose API is gone (cannot happen through the API,
        // but a hand-edited file should not make ghosts routable).
        s.apis.retain(|_, a| a.api.is_some());
        s
    }

    pub fn api(&self, id: &str) -> Option<&ApiState> {
        self.apis.get(id).filter(|a| a.api.is_some())
    }

    /// Whether the account has an API with this name.
    pub fn api_name_taken(&self, account_id: &str, name: &str) -> bool {
        self.api_names
            .get(account_id)
            .and_then(|names| names.get(name))
            .is_some_and(|n| *n > 0)
    }

    fn name_added(&mut self, api: &Api) {
        *self
            .api_names
            .entry(api.account_id.clone())
            .or_default()
            .entry(api.name.clone())
            .or_default() += 1;
    }

    fn name_removed(&mut self, api: Option<&Api>) {
        let Some(api) = api else { return };
        let Some(names) = self.api_names.get_mut(&api.account_id) else {
            return;
        };
        if let Some(n) = names.get_mut(&api.name) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                names.remove(&api.name);
            }
        }
        if names.is_empty() {
            self.api_names.remove(&api.account_id);
        }
    }

    /// An API state leaves the map: its name is free again.
    fn remove_api(&mut self, api_id: &str) {
        if let Some(gone) = self.apis.remove(api_id) {
            self.name_removed(gone.api.as_ref());
        }
    }

    /// Ids of the APIs that integrate the function (their routes hold
    /// its compiled target).
    pub fn apis_using_function(&self, function_id: &str) -> Vec<String> {
        self.apis
            .iter()
            .filter(|(_, a)| a.uses_function(function_id))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Ids of the APIs whose methods (or a deployment a stage serves)
    /// integrate the PrivateLink endpoint.
    pub fn apis_using_privatelink_endpoint(&self, endpoint_id: &str) -> Vec<String> {
        let is = |m: &Method| m.privatelink_endpoint_id.as_deref() == Some(endpoint_id);
        self.apis
            .iter()
            .filter(|(_, a)| {
                a.methods.values().any(is)
                    || a.stages
                        .values()
                        .filter_map(|s| a.deployments.get(&s.deployment_id))
                        .any(|d| d.methods.iter().any(|dm| is(&dm.method)))
            })
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Apply committed changes; returns the ids of the APIs touched (a
    /// function's change touches the APIs that use it; a PrivateLink
    /// endpoint's, the API it targets, before and after: its set of
    /// Active endpoints is compiled into that API's routes).
    pub fn apply(&mut self, changes: &[Change]) -> Vec<String> {
        let mut touched: Vec<String> = Vec::new();
        for c in changes {
            let function = match c {
                Change::Put(Entity::Function(f)) => Some(f.id.as_str()),
                Change::Delete {
                    kind: Kind::Function,
                    key,
                    ..
                } => Some(key.as_str()),
                _ => None,
            };
            if let Some(fid) = function {
                for id in self.apis_using_function(fid) {
                    if !touched.contains(&id) {
                        touched.push(id);
                    }
                }
            }
            let endpoint_api = match c {
                Change::Put(Entity::PrivatelinkEndpoint(e)) => Some(e.service_api_id.clone()),
                Change::Delete {
                    kind: Kind::PrivatelinkEndpoint,
                    key,
                    ..
                } => self
                    .privatelink_endpoints
                    .get(key)
                    .map(|e| e.service_api_id.clone()),
                _ => None,
            };
            let endpoint_was = match c {
                Change::Put(Entity::PrivatelinkEndpoint(e)) => self
                    .privatelink_endpoints
                    .get(&e.id)
                    .map(|old| old.service_api_id.clone()),
                _ => None,
            };
            // ... and the APIs whose PRIVATELINK methods use it.
            let endpoint_users = match c {
                Change::Put(Entity::PrivatelinkEndpoint(e)) => {
                    self.apis_using_privatelink_endpoint(&e.id)
                }
                Change::Delete {
                    kind: Kind::PrivatelinkEndpoint,
                    key,
                    ..
                } => self.apis_using_privatelink_endpoint(key),
                _ => Vec::new(),
            };
            for id in endpoint_api
                .into_iter()
                .chain(endpoint_was)
                .chain(endpoint_users)
            {
                if !id.is_empty() && !touched.contains(&id) {
                    touched.push(id);
                }
            }
            let id = c.api_id().to_string();
            match c {
                Change::Put(e) => self.put(e.clone()),
                Change::Delete { kind, key, api_id } => self.delete(*kind, key, api_id),
                Change::DeleteApi(api_id) => self.remove_api(api_id),
            }
            if !id.is_empty() && !touched.contains(&id) {
                touched.push(id);
            }
        }
        touched
    }

    /// The base path mappings of a domain, in base path order.
    pub fn mappings_of<'a>(
        &'a self,
        domain_name: &'a str,
    ) -> impl Iterator<Item = &'a BasePathMapping> + 'a {
        self.base_path_mappings
            .range(BasePathMapping::key(domain_name, "")..)
            .take_while(move |(_, m)| m.domain_name == domain_name)
            .map(|(_, m)| m)
    }

    /// The base path mappings to an API (to one of its stages if given).
    pub fn mappings_to<'a>(
        &'a self,
        api_id: &'a str,
        stage_name: Option<&'a str>,
    ) -> impl Iterator<Item = &'a BasePathMapping> + 'a {
        self.base_path_mappings
            .values()
            .filter(move |m| m.api_id == api_id && stage_name.is_none_or(|s| m.stage_name == s))
    }

    fn put(&mut self, e: Entity) {
        if let Entity::DomainName(d) = e {
            self.domain_names.insert(d.domain_name.clone(), d);
            return;
        }
        if let Entity::BasePathMapping(m) = e {
            let key = BasePathMapping::key(&m.domain_name, &m.base_path);
            self.base_path_mappings.insert(key, m);
            return;
        }
        if let Entity::Function(f) = e {
            self.functions.insert(f.id.clone(), f);
            return;
        }
        if let Entity::PrivatelinkEndpoint(x) = e {
            self.privatelink_endpoints.insert(x.id.clone(), x);
            return;
        }
        if let Entity::Api(x) = &e {
            // Replaced just below.
            let old = self.apis.get_mut(&x.id).and_then(|a| a.api.take());
            self.name_removed(old.as_ref());
            self.name_added(x);
        }
        let a = self.apis.entry(e.api_id().to_string()).or_default();
        match e {
            Entity::Api(x) => a.api = Some(x),
            Entity::Resource(x) => {
                a.resources.insert(x.id.clone(), x);
            }
            Entity::Method(x) => {
                a.methods.insert((x.resource_id.clone(), x.method_type), x);
            }
            Entity::Deployment(x) => {
                a.deployments.insert(x.id.clone(), x);
            }
            Entity::Stage(x) => {
                a.stages.insert(x.name.clone(), x);
            }
            Entity::AccessControl(x) => {
                a.access_controls.insert(x.id.clone(), x);
            }
            Entity::Auth(x) => {
                a.auths.insert(x.id.clone(), x);
            }
            Entity::ResourcePolicy(x) => a.resource_policy = Some(x),
            Entity::UsagePlan(x) => {
                a.usage_plans.insert(x.id.clone(), x);
            }
            Entity::ApiKey(x) => {
                a.api_keys.insert(x.id.clone(), x);
            }
            Entity::Function(_) | Entity::PrivatelinkEndpoint(_) => {}
            Entity::DomainName(_) | Entity::BasePathMapping(_) => {}
        }
    }

    fn delete(&mut self, kind: Kind, key: &str, api_id: &str) {
        if kind == Kind::DomainName {
            self.domain_names.remove(key);
            return;
        }
        if kind == Kind::BasePathMapping {
            self.base_path_mappings.remove(key);
            return;
        }
        if kind == Kind::Function {
            self.functions.remove(key);
            return;
        }
        if kind == Kind::PrivatelinkEndpoint {
            self.privatelink_endpoints.remove(key);
            return;
        }
        if kind == Kind::Api {
            self.remove_api(api_id);
            return;
        }
        let Some(a) = self.apis.get_mut(api_id) else {
            return;
        };
        match kind {
            Kind::Api => {}
            Kind::Resource => {
                a.resources.remove(key);
            }
            Kind::Method => {
                if let Some((rid, t)) = key.rsplit_once(':') {
                    if let Some(t) = MethodType::parse(t) {
                        a.methods.remove(&(rid.to_string(), t));
                    }
                }
            }
            Kind::Deployment => {
                a.deployments.remove(key);
            }
            Kind::Stage => {
                if let Some((_, name)) = key.split_once(':') {
                    a.stages.remove(name);
                }
            }
            Kind::AccessControl => {
                a.access_controls.remove(key);
            }
            Kind::Auth => {
                a.auths.remove(key);
            }
            Kind::ResourcePolicy => a.resource_policy = None,
            Kind::UsagePlan => {
                a.usage_plans.remove(key);
            }
            Kind::ApiKey => {
                a.api_keys.remove(key);
            }
            Kind::Function | Kind::PrivatelinkEndpoint => {}
            Kind::DomainName | Kind::BasePathMapping => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(id: &str, account: &str, name: &str) -> Api {
        Api {
            id: id.into(),
            account_id: account.into(),
            name: name.into(),
            description: String::new(),
            endpoint_type: EndpointType::Region,
            tags: vec![],
            created_at: now_rfc3339(),
        }
    }

    fn put(a: Api) -> Change {
        Change::Put(Entity::Api(a))
    }

    /// The index answers what scanning every API answers.
    fn scanned(st: &State, account: &str, name: &str) -> bool {
        st.apis
            .values()
            .filter_map(|a| a.api())
            .any(|a| a.account_id == account && a.name == name)
    }

    fn check(st: &State, cases: &[(&str, &str, bool)]) {
        for &(account, name, taken) in cases {
            assert_eq!(st.api_name_taken(account, name), taken, "{account}/{name}");
            assert_eq!(scanned(st, account, name), taken, "{account}/{name} scan");
        }
    }

    #[test]
    fn api_names_follow_puts_and_deletes() {
        let mut st = State::default();
        st.apply(&[
            put(api("a1", "acct", "pets")),
            put(api("a2", "other", "pets")),
        ]);
        check(
            &st,
            &[
                ("acct", "pets", true),
                ("other", "pets", true),
                ("acct", "cats", false),
            ],
        );

        // A put of the same API under another name frees the old one.
        st.apply(&[put(api("a1", "acct", "cats"))]);
        check(&st, &[("acct", "pets", false), ("acct", "cats", true)]);
        // Putting it again unchanged counts it once.
        st.apply(&[put(api("a1", "acct", "cats"))]);
        st.apply(&[Change::DeleteApi("a1".into())]);
        check(&st, &[("acct", "cats", false), ("other", "pets", true)]);

        st.apply(&[Change::Delete {
            kind: Kind::Api,
            key: "a2".into(),
            api_id: "a2".into(),
        }]);
        check(&st, &[("other", "pets", false)]);
        assert!(st.api_names.is_empty(), "{:?}", st.api_names);

        // Deleting what is not there changes nothing.
        st.apply(&[Change::DeleteApi("nope".into())]);
        assert!(st.api_names.is_empty());
    }

    #[test]
    fn duplicate_names_in_a_loaded_store_stay_taken_until_the_last_goes() {
        // Not possible through the API, but a hand-edited store may hold
        // two APIs of one account with one name.
        let mut st = State::from_entities(vec![
            Entity::Api(api("a1", "acct", "pets")),
            Entity::Api(api("a2", "acct", "pets")),
        ]);
        check(&st, &[("acct", "pets", true)]);
        st.apply(&[Change::DeleteApi("a1".into())]);
        check(&st, &[("acct", "pets", true)]);
        st.apply(&[Change::DeleteApi("a2".into())]);
        check(&st, &[("acct", "pets", false)]);
    }
}
