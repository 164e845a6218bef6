//! The daemon side: the [`Manager`], the [`Provider`] trait and its built-in process
//! provider, the REST [`router`], and `mistify-supervisord` itself ([`server`]).

mod engine;
pub mod logring;
pub mod manager;
pub mod process;
pub mod rest;
pub mod server;
pub mod tls;

pub use manager::{Manager, ManagerError, Provider, ProviderContext, ServiceConfig};
pub use process::Process;
pub use rest::router;
