//! Hand-built archives of a recursive type, of any shape and depth, written without
//! recursion: material for the decoder's fuzz target and property tests (compiled for
//! tests and the `fuzzing` feature only).
//!
//! [`Nest`] is a tree whose every node is a vector of nodes. Its archived form is an
//! `ArchivedVec`: a 32-bit relative offset to the children, then their count (8 bytes,
//! aligned to 4). The builder lays nodes out as rkyv does, in post-order: a node's
//! children's subtrees first, then the children themselves as one slice; the root last.

use rkyv::{Archive, Deserialize, Serialize};

/// A tree of vectors: nesting depth is the only thing it has.
#[derive(Archive, Serialize, Deserialize, Debug, PartialEq)]
#[rkyv(serialize_bounds(__S: rkyv::ser::Writer + rkyv::ser::Allocator, __S::Error: rkyv::rancor::Source))]
#[rkyv(deserialize_bounds(__D::Error: rkyv::rancor::Source))]
#[rkyv(bytecheck(bounds(__C: rkyv::validation::ArchiveContext, __C::Error: rkyv::rancor::Source)))]
pub(crate) struct Nest(#[rkyv(omit_bounds)] pub(crate) Vec<Nest>);

/// A tree shape: `children[i]` lists node `i`'s children (by index); node 0 is the root.
/// Every node but the root must be the child of exactly one node, after it in no cycle.
#[derive(Debug, Default)]
pub(crate) struct Shape {
    pub(crate) children: Vec<Vec<u32>>,
}

impl Shape {
    /// A chain: `levels` nodes, each the only child of the one before.
    pub(crate) fn chain(levels: usize) -> Shape {
        let n = levels.max(1);
        let mut children: Vec<Vec<u32>> = (1..n).map(|i| vec![i as u32]).collect();
        children.push(Vec::new());
        Shape { children }
    }

    /// A root with `width` childless children.
    pub(crate) fn wide(width: usize) -> Shape {
        let mut children = vec![(1..=width as u32).collect::<Vec<_>>()];
        children.extend((0..width).map(|_| Vec::new()));
        Shape { children }
    }

    /// A chain of `levels` nodes where every node also has `extra` childless children.
    pub(crate) fn comb(levels: usize, extra: usize) -> Shape {
        let mut shape = Shape::default();
        let spine: Vec<u32> = (0..levels.max(1)).map(|_| shape.add(Vec::new())).collect();
        for (i, &node) in spine.iter().enumerate() {
            let mut kids: Vec<u32> = (0..extra).map(|_| shape.add(Vec::new())).collect();
            if let Some(&next) = spine.get(i + 1) {
                kids.insert(kids.len() / 2, next);
            }
            shape.children[node as usize] = kids;
        }
        shape
    }

    fn add(&mut self, kids: Vec<u32>) -> u32 {
        self.children.push(kids);
        (self.children.len() - 1) as u32
    }

    /// Levels of nesting, counting the root (a chain of `n` has depth `n`).
    #[cfg(test)]
    pub(crate) fn depth(&self) -> usize {
        let mut deepest = 0;
        let mut stack = vec![(0u32, 1usize)];
        while let Some((node, d)) = stack.pop() {
            deepest = deepest.max(d);
            stack.extend(self.children[node as usize].iter().map(|&c| (c, d + 1)));
        }
        deepest
    }

    /// The archive rkyv would write for this tree as a [`Nest`].
    pub(crate) fn archive(&self) -> Vec<u8> {
        let n = self.children.len();
        // Where each node's children slice starts (rkyv points an empty one at the
        // writer's position at the time).
        let mut slice_at = vec![0usize; n];
        let mut out = Vec::with_capacity(8 * n);
        // Post-order without recursion: (node, children done?).
        let mut stack = vec![(0u32, false)];
        while let Some((node, done)) = stack.pop() {
            let kids = &self.children[node as usize];
            if !done {
                stack.push((node, true));
                stack.extend(kids.iter().rev().map(|&c| (c, false)));
                continue;
            }
            slice_at[node as usize] = out.len();
            for &kid in kids {
                let here = out.len();
                push_vec(
                    &mut out,
                    here,
                    slice_at[kid as usize],
                    self.children[kid as usize].len(),
                );
            }
        }
        let here = out.len();
        push_vec(&mut out, here, slice_at[0], self.children[0].len());
        out
    }
}

/// Appends an `ArchivedVec` at `here` pointing at `target` with `len` elements.
fn push_vec(out: &mut Vec<u8>, here: usize, target: usize, len: usize) {
    let offset = target as i64 - here as i64;
    out.extend_from_slice(&(offset as i32).to_le_bytes());
    out.extend_from_slice(&(len as u32).to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nest(levels: usize) -> Nest {
        let mut n = Nest(Vec::new());
        for _ in 1..levels {
            n = Nest(vec![n]);
        }
        n
    }

    #[test]
    fn a_built_chain_is_byte_for_byte_what_rkyv_writes() {
        for levels in 1..6 {
            let rkyv = rkyv::to_bytes::<rkyv::rancor::Error>(&nest(levels)).unwrap();
            assert_eq!(
                Shape::chain(levels).archive(),
                rkyv.as_slice(),
                "{levels} levels"
            );
        }
    }

    #[test]
    fn a_built_comb_is_byte_for_byte_what_rkyv_writes() {
        let mut value = Nest((0..3).map(|_| Nest(Vec::new())).collect());
        for _ in 1..4 {
            let mut kids: Vec<Nest> = (0..3).map(|_| Nest(Vec::new())).collect();
            kids.insert(1, value);
            value = Nest(kids);
        }
        let rkyv = rkyv::to_bytes::<rkyv::rancor::Error>(&value).unwrap();
        assert_eq!(Shape::comb(4, 3).archive(), rkyv.as_slice());
    }
}
