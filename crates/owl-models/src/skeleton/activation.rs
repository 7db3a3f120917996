//! Gated activations of the feed-forward block: `out = act(gate) * up`.

use std::f32::consts::FRAC_2_SQRT_PI;

/// The activation applied to the gate projection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `x * sigmoid(x)` (SwiGLU: llama, mistral, qwen, phi3).
    Silu,
    /// GELU with the tanh approximation (GeGLU: gemma*, `gelu_pytorch_tanh`).
    GeluTanh,
}

impl Activation {
    /// Parses the Hugging Face `hidden_act` / `hidden_activation` names.
    pub fn from_hf_name(name: &str) -> Option<Self> {
        match name {
            "silu" | "swish" => Some(Activation::Silu),
            "gelu_pytorch_tanh" | "gelu_new" | "gelu_fast" | "gelu_tanh" => Some(Activation::GeluTanh),
            _ => None,
        }
    }

    #[inline]
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Activation::Silu => x / (1.0 + (-x).exp()),
            Activation::GeluTanh => {
                // sqrt(2/pi) = FRAC_2_SQRT_PI / sqrt(2)
                let k = FRAC_2_SQRT_PI * std::f32::consts::FRAC_1_SQRT_2;
                0.5 * x * (1.0 + (k * (x + 0.044715 * x * x * x)).tanh())
            }
        }
    }

    /// `out[i] = act(gate[i]) * up[i]`.
    #[inline]
    pub fn glu(self, gate: &[f32], up: &[f32], out: &mut [f32]) {
        for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
            *o = self.apply(g) * u;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        assert!((Activation::Silu.apply(1.0) - 0.731_058_6).abs() < 1e-6);
        // torch.nn.functional.gelu(torch.tensor(1.0), approximate="tanh") = 0.8411920
        assert!((Activation::GeluTanh.apply(1.0) - 0.841_192).abs() < 1e-6);
        assert!((Activation::GeluTanh.apply(-3.0) - (-0.003_637_4)).abs() < 1e-6);
    }
}
