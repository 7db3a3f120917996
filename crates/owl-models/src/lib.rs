//! owl-models
