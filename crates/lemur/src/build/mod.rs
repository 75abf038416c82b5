//! Building an index in Rust: training targets, the feature map, `W`.

mod builder;
mod config;
mod source;
mod streamed;
mod targets;

pub use builder::{BuildError, BuildReport, IndexBuilder, Stage};
pub use config::BuildConfig;
pub use source::DocumentSource;
