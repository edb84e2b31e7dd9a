//! `health`: the server's (or a service's) serving status.

use std::process::ExitCode;

use clap::Args;
use syncrpc::server::{
    HealthCheckRequest, HealthCheckResponse, ServingStatus, HEALTH_CHECK_METHOD,
};

use crate::connect::Target;
use crate::exit::{self, Failure};

#[derive(Args, Debug)]
pub struct HealthArgs {
    #[command(flatten)]
    target: Target,
    /// Ask about this service rather than the whole server.
    service: Option<String>,
}

pub fn health(args: HealthArgs) -> Result<ExitCode, Failure> {
    let client = args.target.client()?;
    let req = HealthCheckRequest::service(args.service.unwrap_or_default());
    let resp: HealthCheckResponse = client
        .call(&args.target.context(), HEALTH_CHECK_METHOD, &req)
        .map_err(|e| Failure::call(&e))?;
    println!("{}", resp.status);
    Ok(match resp.status {
        ServingStatus::Serving => ExitCode::SUCCESS,
        _ => ExitCode::from(exit::FAILED),
    })
}
