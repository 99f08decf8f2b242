//! Sharded checkpoints: the file a loader reads after another. Checkpoints too large for one file
//! are saved as `<stem>-<k>-of-<n>.<ext>` (`model-00001-of-00004.safetensors`), and loaders read
//! the shards in order, so the next shard's first bytes can be fetched while one finishes.

/// The name of the shard after `name`, when `name` is shard `k` of `n` (`k < n`), with the same
/// zero-padding: `model-00001-of-00004.safetensors` → `model-00002-of-00004.safetensors`.
pub fn next_shard_name(name: &str) -> Option<String> {
    let (head, tail) = name.rsplit_once("-of-")?;
    let (stem, k) = head.rsplit_once('-')?;
    let n_len = tail.bytes().take_while(u8::is_ascii_digit).count();
    let (n, ext) = tail.split_at(n_len);
    if k.is_empty() || n.is_empty() || !k.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (k_num, n_num): (u64, u64) = (k.parse().ok()?, n.parse().ok()?);
    if k_num == 0 || k_num >= n_num || stem.is_empty() {
        return None;
    }
    Some(format!(
        "{stem}-{:0width$}-of-{n}{ext}",
        k_num + 1,
        width = k.len()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_shard_names() {
        for (name, next) in [
            (
                "model-00001-of-00004.safetensors",
                Some("model-00002-of-00004.safetensors"),
            ),
            (
                "model-00003-of-00004.safetensors",
                Some("model-00004-of-00004.safetensors"),
            ),
            ("model-00004-of-00004.safetensors", None),
            (
                "pytorch_model-9-of-12.bin",
                Some("pytorch_model-10-of-12.bin"),
            ),
            ("data-00099-of-00100", Some("data-00100-of-00100")),
            ("model.safetensors", None),
            ("model-x-of-00004.safetensors", None),
            ("-00001-of-00004.safetensors", None),
            ("model-00000-of-00004.safetensors", None),
            ("model-00001-of-.safetensors", None),
        ] {
            assert_eq!(next_shard_name(name).as_deref(), next, "{name}");
        }
    }
}
