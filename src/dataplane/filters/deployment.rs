//! `x-apigw-deployment`: the id of the deployment that served the request
//! (the stage's active one, or its canary's), on every answer once a stage
//! was routed: the integration's and the gateway's own errors alike. The
//! value is precompiled in the snapshot: one reference-count increment.

use super::{ResponseCtx, ResponseFilter};
use crate::dataplane::RespBody;
use http::Response;

pub static X_APIGW_DEPLOYMENT: http::HeaderName =
    http::HeaderName::from_static("x-apigw-deployment");

pub struct Deployment;

impl ResponseFilter for Deployment {
    fn response_filter(ctx: &mut ResponseCtx, resp: &mut Response<RespBody>) {
        if let Some(stage) = &ctx.stage {
            resp.headers_mut()
                .insert(X_APIGW_DEPLOYMENT.clone(), stage.deployment_header.clone());
        }
    }
}
