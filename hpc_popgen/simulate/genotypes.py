"""Haplotype matrices of mutated tree sequences in one compiled pass over the trees.

tskit's ``genotype_matrix`` decodes site by site from Python (about 1 us per site, more than the image
step on the paper's regions). For msprime's binary model (ancestral state 0, derived states 0 or 1,
samples 0..n-1) the matrix is filled here by walking each tree's edge changes and setting the samples
below each mutation to its state, oldest first (tskit orders a site's mutations parents first, so a
back mutation overrides its parent); other tree sequences go through tskit.
"""

from __future__ import annotations

import numba
import numpy as np
import tskit


@numba.njit(cache=True)
def _fill(n_samples: int, n_nodes: int, seq_len: float, left: np.ndarray, right: np.ndarray, parent: np.ndarray,
          child: np.ndarray, ins: np.ndarray, rem: np.ndarray, site_pos: np.ndarray, mut_site: np.ndarray,
          mut_node: np.ndarray, mut_state: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - compiled
    """Set out[sample, site] to each mutation's state below it, tree by tree (tskit's edge insertion and
    removal orders, sibling lists as in tskit's tree)."""
    left_child = np.full(n_nodes, -1, np.int64)
    right_child = np.full(n_nodes, -1, np.int64)
    left_sib = np.full(n_nodes, -1, np.int64)
    right_sib = np.full(n_nodes, -1, np.int64)
    stack = np.empty(n_nodes, np.int64)
    n_edges, n_mut = left.shape[0], mut_site.shape[0]
    j = k = m = 0
    tl = 0.0
    while tl < seq_len:
        while k < n_edges and right[rem[k]] == tl:
            e = rem[k]
            p, c = parent[e], child[e]
            ls, rs = left_sib[c], right_sib[c]
            if ls == -1:
                left_child[p] = rs
            else:
                right_sib[ls] = rs
            if rs == -1:
                right_child[p] = ls
            else:
                left_sib[rs] = ls
            left_sib[c] = right_sib[c] = -1
            k += 1
        while j < n_edges and left[ins[j]] == tl:
            e = ins[j]
            p, c = parent[e], child[e]
            u = right_child[p]
            if u == -1:
                left_child[p] = c
                left_sib[c] = -1
            else:
                right_sib[u] = c
                left_sib[c] = u
            right_sib[c] = -1
            right_child[p] = c
            j += 1
        tr = seq_len
        if j < n_edges and left[ins[j]] < tr:
            tr = left[ins[j]]
        if k < n_edges and right[rem[k]] < tr:
            tr = right[rem[k]]
        while m < n_mut and site_pos[mut_site[m]] < tr:
            s, state = mut_site[m], mut_state[m]
            stack[0] = mut_node[m]
            top = 1
            while top > 0:
                top -= 1
                v = stack[top]
                if v < n_samples:
                    out[v, s] = state
                c = left_child[v]
                while c != -1:
                    stack[top] = c
                    top += 1
                    c = right_sib[c]
            m += 1
        tl = tr


def _binary(ts: tskit.TreeSequence) -> bool:
    """Ancestral states 0, derived states 0 or 1, samples 0..n-1: msprime's binary model, what
    :func:`_fill` assumes."""
    return (bool(np.all(ts.sites_ancestral_state == "0"))
            and bool(np.all((ts.mutations_derived_state == "1") | (ts.mutations_derived_state == "0")))
            and np.array_equal(ts.samples(), np.arange(ts.num_samples)))


def haplotype_matrix(ts: tskit.TreeSequence, binary: bool = False) -> np.ndarray:
    """(n_samples, n_sites) uint8 0/1 matrix: ``ts.genotype_matrix().T`` for msprime's binary model,
    compiled; tskit's own decoder for anything else. ``binary``: the caller made ``ts`` with msprime's
    ancestry and binary mutation model, so the check (about 20 us) is skipped."""
    if not (binary or _binary(ts)):
        return ts.genotype_matrix().T.astype(np.uint8)
    out = np.zeros((ts.num_samples, ts.num_sites), dtype=np.uint8)
    if ts.num_sites:
        _fill(ts.num_samples, ts.num_nodes, ts.sequence_length, ts.edges_left, ts.edges_right, ts.edges_parent,
              ts.edges_child, ts.indexes_edge_insertion_order, ts.indexes_edge_removal_order, ts.sites_position,
              ts.mutations_site, ts.mutations_node, (ts.mutations_derived_state == "1").astype(np.uint8), out)
    return out
