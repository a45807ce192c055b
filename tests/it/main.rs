//! corral's integration tests: one binary, one module per capability, driving corral from
//! outside (its router, its binary) against in-process fakes of Slack and Rancher built
//! from shared/reference.

mod api;
mod approvals;
mod binary;
mod browser;
mod deploy;
mod deploy_fanout;
mod deploy_gs;
mod deploy_hostile;
mod deploy_security;
mod examples;
mod fuzz;
mod hostile_votes;
mod layers;
mod manifest;
mod outbox;
mod playground;
mod playground_browser;
mod rancher_catalog;
mod rancher_client;
mod rancher_cowpoke;
mod rancher_image;
mod releasestatus;
mod replicas;
mod schedule;
mod scheduler;
mod server_limits;
mod slack_ingress;
mod socket_mode;
mod store;
mod support;
