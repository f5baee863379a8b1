//! Flat keys, the configuration layout before sections: a file may still
//! use them (`data_listen = "..."`, `[[credentials]]`), and they are the
//! environment names (`APIGW_DATA_LISTEN`). Each setting's flat name is
//! declared beside it ([`super::Setting::flat`]); this maps one to the
//! other.

use super::{Config, Setting};
use figment::value::{Dict, Map, Value};
use figment::{Error, Metadata, Profile, Provider};

/// The sectioned setting a flat key stands for (top-level settings keep
/// their name and are not listed).
pub fn by_flat(flat: &str) -> Option<&'static Setting> {
    Config::settings().find(|s| !s.section.is_empty() && s.flat == flat)
}

/// The key path an environment variable (prefix removed, any case) sets:
/// a flat name goes to its section (`data_listen` → `data.listen`), and
/// `__` separates section and key (`data__listen` → `data.listen`).
pub fn env_key(name: &str) -> String {
    let name = name.to_ascii_lowercase();
    match by_flat(&name) {
        Some(s) => s.path(),
        None => name.replace("__", "."),
    }
}

/// Move the flat keys at the top of `dict` into their sections. A setting
/// given both ways is an error; other keys are left for the schema to
/// accept or reject.
pub fn into_sections(dict: &mut Dict) -> Result<(), String> {
    let flat: Vec<String> = dict
        .keys()
        .filter(|k| by_flat(k).is_some())
        .cloned()
        .collect();
    for key in flat {
        let (Some(setting), Some(value)) = (by_flat(&key), dict.remove(&key)) else {
            continue;
        };
        let section = dict
            .entry(setting.section.to_string())
            .or_insert_with(|| Value::from(Dict::new()));
        let Value::Dict(_, section) = section else {
            return Err(format!(
                "`{key}` is the old name of `{}`, but `{}` is not a [{}] section",
                setting.path(),
                setting.section,
                setting.section
            ));
        };
        if section.contains_key(setting.key) {
            return Err(format!(
                "`{key}` and `{}` set the same thing: keep only `{}` under [{}]",
                setting.path(),
                setting.key,
                setting.section
            ));
        }
        section.insert(setting.key.to_string(), value);
    }
    Ok(())
}

/// A provider whose flat keys are moved into their sections.
pub struct Sectioned<P>(pub P);

impl<P: Provider> Provider for Sectioned<P> {
    fn metadata(&self) -> Metadata {
        self.0.metadata()
    }

    fn data(&self) -> Result<Map<Profile, Dict>, Error> {
        let mut data = self.0.data()?;
        for dict in data.values_mut() {
            into_sections(dict).map_err(|e| {
                let mut e = Error::from(e);
                e.metadata = Some(self.metadata());
                e
            })?;
        }
        Ok(data)
    }

    fn profile(&self) -> Option<Profile> {
        self.0.profile()
    }
}
