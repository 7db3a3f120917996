//! Integration tests of the `owl` binary (one test binary; one module per command).

mod bench;
mod convert;
mod corpus;
mod errors;
mod finetune;
mod generate;
mod inspect;
mod interface;
mod lora;
mod perplexity;
mod resources;
mod run;
mod serve;
mod store;
mod support;
mod tensor;
mod tokenize;
mod webui;
