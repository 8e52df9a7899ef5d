//! The `null` provider: `null_resource`, which records its attributes and generates an
//! `id`. Used for tests, benchmarks and glue. It has no real world: `read` returns what
//! was recorded, and it takes no settings.

mod null_resource;

use super::resource::{Context, Typed};
use super::ProviderError;
use serde_json::{Map, Value};

pub use null_resource::NullResource;

/// The null provider's (empty) context.
pub struct NullContext;

impl Context for NullContext {
    fn configure(settings: &Map<String, Value>) -> Result<NullContext, ProviderError> {
        match settings.keys().next() {
            None => Ok(NullContext),
            Some(k) => Err(ProviderError::invalid(format!(
                "the null provider takes no settings, but `{k}` is given; remove it"
            ))),
        }
    }
}

/// The `null` provider with its resource types.
#[must_use]
pub fn provider() -> Typed<NullContext> {
    Typed::new("null", NullContext, usize::MAX)
        .with(NullResource)
        .without_real_world()
}
