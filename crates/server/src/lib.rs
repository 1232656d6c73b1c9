//! The Switchboard server: WebSocket endpoints, REST API, configuration and the
//! `switchboard` binary, around a [`switchboard_hub::Hub`].
//!
//! Where to start: [`server::serve`] binds and runs everything; [`ws`] answers upgrade
//! requests and hands sockets to the hub's connection driver through [`transport`];
//! [`api`] is the REST surface; [`config`] reads TOML, environment and flags.

pub mod api;
pub mod api_types;
pub mod auth;
pub mod cli;
pub mod cluster;
pub mod commands;
pub mod config;
pub mod cors;
pub mod deflate;
pub mod discovery;
pub mod json_body;
pub mod limits;
pub mod metrics;
pub mod openapi;
pub mod origin;
pub mod ratelimit;
pub mod server;
pub mod session_patch;
pub mod transport;
pub mod web;
pub mod webhooks;
pub mod ws;

pub use config::{Config, Overrides};
pub use server::{Running, serve};
