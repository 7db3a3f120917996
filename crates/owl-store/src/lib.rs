//! owl's model store: content-addressed blobs and one manifest per `name:tag` under
//! `OWL_HOME` (default `~/.owl`), pulls from `hf:`, `https://` and `pypi:` sources, and the
//! built-in catalog of well-known releases with their license and openness facts.
//!
//! Layout of `OWL_HOME` (Ollama's scheme, with our own manifest):
//! - `blobs/sha256-HEX`: file contents, named by their sha256; never written in place.
//! - `manifests/NAME.../TAG.json`: what a name is (source, files, digests, license, time).
//! - `partial/`: downloads in progress (`KEY.part`) and their locks; an interrupted pull
//!   leaves its `.part` here and the next pull resumes it with an HTTP Range request.
//! - `links/NAME.../TAG/`: a directory of links to blobs for multi-file (safetensors) models.

mod bom;
mod card;
mod catalog;
mod error;
mod events;
mod hash;
mod hf;
mod http;
mod manifest;
mod name;
mod openness;
mod pull;
mod pypi;
mod source;
mod store;
mod time;

pub use bom::{cyclonedx, spdx};
pub use card::{CardLicense, Lineage, ModelCard, StoreRecord};
pub use catalog::{Catalog, CatalogEntry, CatalogSource, Component, License, COMPONENT_NAMES};
pub use error::StoreError;
pub use events::PullEvent;
pub use hash::sha256_file;
pub use manifest::{Manifest, ManifestFile, ModelFormat};
pub use name::ModelName;
pub use openness::{front_matter, is_open_license, MetadataFacts, MofClass, Openness, OpennessComponent, Osaid};
pub use pypi::{wheel_payload, IndexConfig};
pub use source::Source;
pub use store::{RemoveReport, ResolvedModel, Store};
pub use time::rfc3339_utc;

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
