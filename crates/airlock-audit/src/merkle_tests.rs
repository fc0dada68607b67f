use std::path::{Path, PathBuf};

use proptest::prelude::*;
use serde_json::Value;

use super::*;

/// The RFC 6962 test tree's leaf inputs (see `shared/testdata/merkle/README.md`).
const LEAVES: [&str; 8] =
    ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"];

fn reference_leaves() -> Vec<Hash> {
    LEAVES.iter().map(|hex_input| leaf_hash(&hex::decode(hex_input).unwrap())).collect()
}

#[test]
fn the_rfc6962_reference_tree() {
    let leaves = reference_leaves();
    assert_eq!(leaves[0].to_hex(), "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d");
    assert_eq!(leaves[7].to_hex(), "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1");
    assert_eq!(root(&leaves).to_hex(), "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328");
    assert_eq!(root(&[]).to_hex(), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

fn vectors(kind: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/testdata/merkle/transparency-dev/testdata")
        .join(kind)
}

fn cases(dir: &Path) -> Vec<(PathBuf, Value)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "json") {
                let value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
                out.push((path, value));
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// A vector's hash, which must be 32 bytes.
fn hash(value: &Value) -> Option<Hash> {
    value.as_str().and_then(Hash::from_base64)
}

/// A consistency vector's root. Some vectors hold placeholders that are not 32 bytes ("don't care"
/// roots of equal-size trees, empty strings); those stand in as a domain-separated hash of
/// their bytes, which keeps equal placeholders equal and never matches a real hash.
fn root_or_placeholder(value: &Value) -> Option<Hash> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD.decode(value.as_str()?).ok()?;
    Some(Hash::from_slice(&bytes).unwrap_or_else(|| Hash::of(&[b"placeholder:", &bytes])))
}

fn proof(value: &Value) -> Option<Vec<Hash>> {
    match value {
        Value::Null => Some(Vec::new()),
        Value::Array(items) => items.iter().map(hash).collect(),
        _ => None,
    }
}

#[test]
fn every_transparency_dev_inclusion_vector() {
    let all = cases(&vectors("inclusion"));
    assert!(all.len() >= 40, "found only {} inclusion vectors", all.len());
    for (path, case) in all {
        let want_err = case["wantErr"].as_bool().unwrap();
        let outcome = (|| {
            let (leaf, root, proof) =
                (hash(&case["leafHash"])?, hash(&case["root"])?, proof(&case["proof"])?);
            let index = case["leafIdx"].as_u64()?;
            let size = case["treeSize"].as_u64()?;
            Some(verify_inclusion(&leaf, index, size, &proof, &root))
        })();
        let rejected = !matches!(outcome, Some(Ok(())));
        assert_eq!(rejected, want_err, "{}: {:?}", path.display(), outcome);
    }
}

#[test]
fn every_transparency_dev_consistency_vector() {
    let all = cases(&vectors("consistency"));
    assert!(all.len() >= 60, "found only {} consistency vectors", all.len());
    for (path, case) in all {
        let want_err = case["wantErr"].as_bool().unwrap();
        let outcome = (|| {
            let (root1, root2) = (root_or_placeholder(&case["root1"])?, root_or_placeholder(&case["root2"])?);
            let proof = proof(&case["proof"])?;
            Some(verify_consistency(case["size1"].as_u64()?, case["size2"].as_u64()?, &root1, &root2, &proof))
        })();
        let rejected = !matches!(outcome, Some(Ok(())));
        assert_eq!(rejected, want_err, "{}: {:?}", path.display(), outcome);
    }
}

#[test]
fn generated_proofs_match_the_reference_vectors() {
    let leaves = reference_leaves();
    let case: Value = serde_json::from_str(
        &std::fs::read_to_string(vectors("inclusion").join("1/happy-path.json")).unwrap(),
    )
    .unwrap();
    let index = usize::try_from(case["leafIdx"].as_u64().unwrap()).unwrap();
    assert_eq!(inclusion_proof(&leaves, index).unwrap(), proof(&case["proof"]).unwrap());
    let case: Value = serde_json::from_str(
        &std::fs::read_to_string(vectors("consistency").join("1/happy-path.json")).unwrap(),
    )
    .unwrap();
    let size1 = usize::try_from(case["size1"].as_u64().unwrap()).unwrap();
    assert_eq!(consistency_proof(&leaves, size1).unwrap(), proof(&case["proof"]).unwrap());
}

fn tree(n: usize) -> Vec<Hash> {
    (0..n).map(|i| leaf_hash(&(i as u64).to_be_bytes())).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn the_frontier_agrees_with_the_recursive_root(n in 0usize..300) {
        let leaves = tree(n);
        let mut frontier = Frontier::new();
        for (i, leaf) in leaves.iter().enumerate() {
            frontier.push(*leaf);
            prop_assert_eq!(frontier.root(), recursive_root(&leaves[..=i]));
        }
        prop_assert_eq!(frontier.size(), n as u64);
    }

    #[test]
    fn every_inclusion_proof_verifies_and_a_flipped_bit_does_not(n in 1usize..200, pick in any::<prop::sample::Index>(), bit in 0usize..256) {
        let leaves = tree(n);
        let root = root(&leaves);
        let index = pick.index(n);
        let proof = inclusion_proof(&leaves, index).unwrap();
        prop_assert!(verify_inclusion(&leaves[index], index as u64, n as u64, &proof, &root).is_ok());
        if !proof.is_empty() {
            let mut bad = proof.clone();
            let at = bit % bad.len();
            bad[at].0[(bit / 8) % 32] ^= 1 << (bit % 8);
            prop_assert!(verify_inclusion(&leaves[index], index as u64, n as u64, &bad, &root).is_err());
        }
        // The proof does not prove a neighbour, or with a hash added. (It can verify for a
        // different tree size whose path has the same shape: RFC 9162 binds the size through
        // the signed checkpoint, not the proof.)
        if n > 1 {
            let other = (index + 1) % n;
            prop_assert!(verify_inclusion(&leaves[other], index as u64, n as u64, &proof, &root).is_err());
            let mut longer = proof.clone();
            longer.push(root);
            prop_assert!(verify_inclusion(&leaves[index], index as u64, n as u64, &longer, &root).is_err());
        }
    }

    #[test]
    fn every_consistency_proof_verifies_and_a_changed_tree_does_not(n in 2usize..200, pick in any::<prop::sample::Index>()) {
        let leaves = tree(n);
        let size1 = 1 + pick.index(n - 1);
        let proof = consistency_proof(&leaves, size1).unwrap();
        let (root1, root2) = (root(&leaves[..size1]), root(&leaves));
        prop_assert!(verify_consistency(size1 as u64, n as u64, &root1, &root2, &proof).is_ok());
        // Rewriting any old leaf breaks consistency with the old root.
        let mut rewritten = leaves.clone();
        rewritten[size1 - 1] = leaf_hash(b"rewritten");
        let forged = consistency_proof(&rewritten, size1).unwrap();
        prop_assert!(verify_consistency(size1 as u64, n as u64, &root1, &root(&rewritten), &forged).is_err());
    }
}

/// RFC 6962 MTH written as the RFC states it, to check the iterative frontier against.
fn recursive_root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => Hash::of(&[]),
        1 => leaves[0],
        n => {
            let k = split(n);
            node_hash(&recursive_root(&leaves[..k]), &recursive_root(&leaves[k..]))
        }
    }
}
