//! Declarative services: the specs a config declares (`spec`), the state
//! machine of one instance (`machine`), and the manager that keeps the
//! running instances equal to the specs (`manager`). Pure: no I/O, time is
//! an argument, and what must happen is returned as `Action`s.

pub mod machine;
pub mod manager;
pub mod net;
pub mod probe;
pub mod spec;
pub mod wire;

pub use machine::{Action, Instance, SvcState};
pub use manager::Services;
