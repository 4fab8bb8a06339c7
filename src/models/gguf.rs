//! GGUF requantization, used once by `scripts/fetch-models`: SmolLM2's
//! published Q4_1 weights (and Gemma 3 270M's Q5_0 ones) have only a slow
//! scalar path in candle, and Q4_0 ruins a model this small, so those
//! tensors are rewritten as Q8_0 (from 4 or 5 bits, all but lossless).

use std::path::Path;

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::Device;

use super::{corrupt, need, ModelError};

/// llama.cpp's `general.file_type` for "mostly Q8_0".
const FILE_TYPE_Q8_0: u32 = 7;

/// Rewrites every Q4_0/Q4_1/Q5_0/Q5_1 tensor of `input` as Q8_0 into `output`;
/// other tensors (norms in F32, k-quants, ...) and all metadata are copied as they
/// are. Returns how many tensors were converted.
pub fn requantize_q8_0(input: &Path, output: &Path) -> Result<usize, ModelError> {
    let mut f = std::fs::File::open(need(input)?).map_err(|e| corrupt(input, e))?;
    let content = gguf_file::Content::read(&mut f).map_err(|e| corrupt(input, e))?;
    let dev = Device::Cpu;
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    let mut tensors: Vec<(String, QTensor)> = Vec::with_capacity(names.len());
    let mut converted = 0;
    for name in names {
        let q = content
            .tensor(&mut f, name, &dev)
            .map_err(|e| corrupt(input, e))?;
        let q = if matches!(
            q.dtype(),
            GgmlDType::Q4_0 | GgmlDType::Q4_1 | GgmlDType::Q5_0 | GgmlDType::Q5_1
        ) {
            converted += 1;
            let t = q.dequantize(&dev).map_err(|e| corrupt(input, e))?;
            QTensor::quantize(&t, GgmlDType::Q8_0)
                .map_err(|e| ModelError::Inference(e.to_string()))?
        } else {
            q
        };
        tensors.push((name.clone(), q));
    }
    let mut meta: Vec<(&str, gguf_file::Value)> = content
        .metadata
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    meta.sort_by(|a, b| a.0.cmp(b.0));
    // "Mostly Q8_0" only when it is so (Gemma keeps its k-quants).
    let all_q8 = tensors.iter().all(|(_, t)| {
        matches!(
            t.dtype(),
            GgmlDType::Q8_0 | GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16
        )
    });
    for (k, v) in meta.iter_mut() {
        if *k == "general.file_type" && all_q8 {
            *v = gguf_file::Value::U32(FILE_TYPE_Q8_0);
        }
    }
    let tmp = output.with_extension("gguf.part");
    let mut w = std::io::BufWriter::new(std::fs::File::create(&tmp).map_err(|e| corrupt(&tmp, e))?);
    let meta_refs: Vec<(&str, &gguf_file::Value)> = meta.iter().map(|(k, v)| (*k, v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, t)| (k.as_str(), t)).collect();
    gguf_file::write(&mut w, &meta_refs, &tensor_refs).map_err(|e| corrupt(&tmp, e))?;
    use std::io::Write;
    w.flush().map_err(|e| corrupt(&tmp, e))?;
    drop(w);
    std::fs::rename(&tmp, output).map_err(|e| corrupt(output, e))?;
    Ok(converted)
}
