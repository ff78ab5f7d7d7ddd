//! Tokenizing with a model's vocabulary alone (no weights loaded): for
//! tools and tests that need token ids.

use std::path::Path;

use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;

/// The token ids of `text` under the model's tokenizer (no BOS added,
/// special tokens parsed).
pub fn tokenize_file(model_path: &Path, text: &str) -> Result<Vec<i32>, String> {
    let backend = crate::backend::backend()?;
    let params = LlamaModelParams::default().with_vocab_only(true);
    let model =
        LlamaModel::load_from_file(backend, model_path, &params).map_err(|e| e.to_string())?;
    Ok(model
        .vocab()
        .tokenize(text.as_bytes(), false, true)
        .into_iter()
        .map(|t| t.0)
        .collect())
}
