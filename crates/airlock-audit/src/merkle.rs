//! The RFC 6962 / RFC 9162 Merkle tree over the log's entries.
//!
//! Leaf hash `SHA-256(0x00 || entry)`, node hash `SHA-256(0x01 || left || right)`. Proof
//! generation follows RFC 6962 §2.1 (PATH and SUBPROOF); verification follows RFC 9162
//! §2.1.3.2 and §2.1.4.2 literally, so it can be checked line by line against the RFC.

use crate::Hash;

/// A proof that does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The index or sizes are impossible (index past the end, first size past the second,
    /// an empty first tree).
    #[error("invalid proof request: {0}")]
    Range(&'static str),
    /// The proof has the wrong number of hashes for its sizes.
    #[error("the proof has the wrong length")]
    Length,
    /// The proof's hashes do not lead to the expected root(s).
    #[error("the proof does not match the root")]
    Mismatch,
}

/// The hash of a leaf.
#[must_use]
pub fn leaf_hash(data: &[u8]) -> Hash {
    Hash::of(&[&[0x00], data])
}

/// The hash of an interior node.
#[must_use]
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    Hash::of(&[&[0x01], &left.0, &right.0])
}

/// The largest power of two smaller than `n` (`n` > 1).
fn split(n: usize) -> usize {
    let mut k = 1;
    while k << 1 < n {
        k <<= 1;
    }
    k
}

/// The root of the tree whose leaf hashes are `leaves` (the SHA-256 of nothing when empty).
#[must_use]
pub fn root(leaves: &[Hash]) -> Hash {
    let mut frontier = Frontier::new();
    for leaf in leaves {
        frontier.push(*leaf);
    }
    frontier.root()
}

fn subtree_root(leaves: &[Hash]) -> Hash {
    root(leaves)
}

/// The inclusion proof of leaf `index` in the tree of `leaves` (RFC 6962 §2.1.1).
pub fn inclusion_proof(leaves: &[Hash], index: usize) -> Result<Vec<Hash>, ProofError> {
    if index >= leaves.len() {
        return Err(ProofError::Range("the leaf index is not in the tree"));
    }
    let mut proof = Vec::new();
    path(index, leaves, &mut proof);
    Ok(proof)
}

fn path(m: usize, leaves: &[Hash], proof: &mut Vec<Hash>) {
    let n = leaves.len();
    if n <= 1 {
        return;
    }
    let k = split(n);
    let (left, right) = leaves.split_at(k);
    if m < k {
        path(m, left, proof);
        proof.push(subtree_root(right));
    } else {
        path(m - k, right, proof);
        proof.push(subtree_root(left));
    }
}

/// The consistency proof between the first `size1` leaves and all of `leaves`
/// (RFC 6962 §2.1.2).
pub fn consistency_proof(leaves: &[Hash], size1: usize) -> Result<Vec<Hash>, ProofError> {
    if size1 == 0 || size1 > leaves.len() {
        return Err(ProofError::Range("the first size must be between 1 and the second size"));
    }
    let mut proof = Vec::new();
    if size1 < leaves.len() {
        subproof(size1, leaves, true, &mut proof);
    }
    Ok(proof)
}

fn subproof(m: usize, leaves: &[Hash], complete: bool, proof: &mut Vec<Hash>) {
    let n = leaves.len();
    if m == n {
        if !complete {
            proof.push(subtree_root(leaves));
        }
        return;
    }
    let k = split(n);
    let (left, right) = leaves.split_at(k);
    if m <= k {
        subproof(m, left, complete, proof);
        proof.push(subtree_root(right));
    } else {
        subproof(m - k, right, false, proof);
        proof.push(subtree_root(left));
    }
}

/// Verifies that `leaf` is at `index` in the tree of `size` leaves with `root`
/// (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(
    leaf: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::Range("the leaf index is not in the tree"));
    }
    let (mut f_n, mut s_n) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if s_n == 0 {
            return Err(ProofError::Length);
        }
        if f_n & 1 == 1 || f_n == s_n {
            r = node_hash(p, &r);
            while f_n & 1 == 0 && f_n != 0 {
                f_n >>= 1;
                s_n >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    if s_n != 0 {
        return Err(ProofError::Length);
    }
    if &r == root { Ok(()) } else { Err(ProofError::Mismatch) }
}

/// Verifies that the tree of `size2` leaves with `root2` extends the tree of `size1` leaves
/// with `root1` (RFC 9162 §2.1.4.2).
pub fn verify_consistency(
    size1: u64,
    size2: u64,
    root1: &Hash,
    root2: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if size1 > size2 {
        return Err(ProofError::Range("the first tree is larger than the second"));
    }
    if size1 == 0 {
        return Err(ProofError::Range("a consistency proof from an empty tree is not defined"));
    }
    if size1 == size2 {
        if !proof.is_empty() {
            return Err(ProofError::Length);
        }
        return if root1 == root2 { Ok(()) } else { Err(ProofError::Mismatch) };
    }
    let mut hashes: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if size1.is_power_of_two() {
        hashes.push(*root1);
    }
    hashes.extend_from_slice(proof);
    let Some((first, rest)) = hashes.split_first() else {
        return Err(ProofError::Length);
    };
    let (mut f_n, mut s_n) = (size1 - 1, size2 - 1);
    while f_n & 1 == 1 {
        f_n >>= 1;
        s_n >>= 1;
    }
    let (mut fr, mut sr) = (*first, *first);
    for c in rest {
        if s_n == 0 {
            return Err(ProofError::Length);
        }
        if f_n & 1 == 1 || f_n == s_n {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while f_n & 1 == 0 && f_n != 0 {
                f_n >>= 1;
                s_n >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    if s_n != 0 {
        return Err(ProofError::Length);
    }
    if &fr == root1 && &sr == root2 { Ok(()) } else { Err(ProofError::Mismatch) }
}

/// The right edge of a growing tree: the roots of its perfect subtrees, largest first.
/// Appending a leaf and computing the root are O(log n), so the log's current root is
/// always at hand without rereading its leaves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    /// Roots of perfect subtrees, one per set bit of `size`, the largest first.
    nodes: Vec<Hash>,
}

impl Frontier {
    /// The empty tree.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// How many leaves the tree has.
    #[must_use]
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends a leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        let mut node = leaf;
        let mut size = self.size;
        // Each trailing one bit of the old size is a perfect subtree of the same height as
        // `node`; merge them, right to left.
        while size & 1 == 1 {
            let Some(left) = self.nodes.pop() else { break };
            node = node_hash(&left, &node);
            size >>= 1;
        }
        self.nodes.push(node);
        self.size += 1;
    }

    /// The tree's root (RFC 6962 MTH).
    #[must_use]
    pub fn root(&self) -> Hash {
        let mut nodes = self.nodes.iter().rev();
        let Some(last) = nodes.next() else {
            return Hash::of(&[]);
        };
        nodes.fold(*last, |right, left| node_hash(left, &right))
    }
}

#[cfg(test)]
#[path = "merkle_tests.rs"]
mod tests;
