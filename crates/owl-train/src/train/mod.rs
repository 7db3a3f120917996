//! LoRA training: the loss and gradients of a batch through a frozen base ([`step`]), the
//! backward of every op ([`ops`]), and AdamW ([`adamw`]).

pub mod adamw;
pub mod finetune;
pub mod ops;
pub mod step;

pub use adamw::{AdamW, AdamWConfig};
pub use step::{loss_and_grads, loss_and_grads_with, loss_only, Example, Grads, LoraParams, StepOptions, TrainPair};
