//! berthd: turns the services of the merged cloud-config into running, supervised
//! containers (ARCHITECTURE.md §3–§5).

pub mod api;
pub mod daemon;
pub mod datasource;
pub mod graph;
pub mod health;
pub mod host;
pub mod logs;
pub mod runtime;
pub mod supervisor;
pub mod timeline;
