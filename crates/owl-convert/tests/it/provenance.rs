//! The `general.*` provenance keys `owl convert` writes from a model directory's name,
//! model card and parameter count, in llama.cpp's order: after `general.architecture`,
//! before the hyper-parameters.

use owl_convert::{convert, ConvertOptions, FileType};
use owl_formats::gguf::{GgufFile, MetadataArray, MetadataValue};

const README: &str = "---\n\
license: apache-2.0\n\
base_model: [org/base]\n\
datasets:\n\
- cerebras/SlimPajama-627B\n\
- bigcode/starcoderdata\n\
language:\n\
- en\n\
tags: [tiny, \"llama\"]\n\
pipeline_tag: text-generation\n\
---\n\
# TinyLlama\n";

fn strings(items: &[&str]) -> MetadataValue {
    MetadataValue::Array(MetadataArray::String(items.iter().map(|s| s.to_string()).collect()))
}

#[test]
fn converted_file_has_llama_cpp_provenance_keys() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("TinyLlama-1.1B-Chat-v1.0");
    std::fs::create_dir(&dir).expect("mkdir");
    let fixture = owl_test::fixture("models/llama");
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture.join(f), dir.join(f)).expect("copy fixture");
    }
    std::fs::write(dir.join("README.md"), README).expect("write README.md");

    for ft in [FileType::F32, FileType::Q4_K_M] {
        let out = tmp.path().join(format!("out.{ft}.gguf"));
        let options = ConvertOptions { file_type: ft, no_tokenizer: true, tokenizer_pre: None };
        convert(&dir, &out, &options, &|_| {}).unwrap_or_else(|e| panic!("convert to {ft}: {e}"));
        let g = GgufFile::open(&out).expect("open converted file");
        let keys: Vec<&str> = g.metadata().iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys[..21].to_vec(),
            vec![
                "general.architecture",
                "general.type",
                "general.name",
                "general.version",
                "general.finetune",
                "general.basename",
                "general.size_label",
                "general.license",
                "general.base_model.count",
                "general.base_model.0.name",
                "general.base_model.0.organization",
                "general.base_model.0.repo_url",
                "general.dataset.count",
                "general.dataset.0.name",
                "general.dataset.0.organization",
                "general.dataset.0.repo_url",
                "general.dataset.1.name",
                "general.dataset.1.organization",
                "general.dataset.1.repo_url",
                "general.tags",
                "general.languages",
            ],
            "{ft}"
        );
        assert_eq!(keys[21], "llama.block_count", "{ft}: the hyper-parameters follow");

        let s = |k: &str| g.get_str(k).unwrap_or_else(|| panic!("{ft}: {k}"));
        assert_eq!(s("general.type"), "model");
        assert_eq!(s("general.name"), "TinyLlama 1.1B Chat v1.0");
        assert_eq!(s("general.version"), "v1.0");
        // The fixture is far smaller than 1.1B parameters: gguf-py reads "1.1B" as a context
        // length (a finetune), and the size label comes from the tensors' element count.
        assert_eq!(s("general.finetune"), "1.1b-Chat");
        assert_eq!(s("general.basename"), "TinyLlama");
        let total: u64 = g.tensors().iter().map(|t| t.n_elements).sum();
        assert_eq!(total, 139_584, "{ft}");
        assert_eq!(s("general.size_label"), "140K");
        assert_eq!(s("general.license"), "apache-2.0");
        assert_eq!(g.get("general.base_model.count"), Some(&MetadataValue::U32(1)));
        assert_eq!(s("general.base_model.0.name"), "Base");
        assert_eq!(s("general.base_model.0.organization"), "Org");
        assert_eq!(s("general.base_model.0.repo_url"), "https://huggingface.co/org/base");
        assert_eq!(g.get("general.dataset.count"), Some(&MetadataValue::U32(2)));
        assert_eq!(s("general.dataset.0.name"), "SlimPajama 627B");
        assert_eq!(s("general.dataset.0.organization"), "Cerebras");
        assert_eq!(s("general.dataset.0.repo_url"), "https://huggingface.co/cerebras/SlimPajama-627B");
        assert_eq!(s("general.dataset.1.name"), "Starcoderdata");
        assert_eq!(s("general.dataset.1.organization"), "Bigcode");
        assert_eq!(s("general.dataset.1.repo_url"), "https://huggingface.co/bigcode/starcoderdata");
        assert_eq!(g.get("general.tags"), Some(&strings(&["tiny", "llama", "text-generation"])));
        assert_eq!(g.get("general.languages"), Some(&strings(&["en"])));
    }
}
