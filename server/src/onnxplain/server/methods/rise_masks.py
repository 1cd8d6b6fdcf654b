"""RISE's random masks (Petsiuk et al. 2018), as the official `generate_masks` makes them, vectorised.

A mask is a binary s x s grid (each cell kept with probability p), upsampled bilinearly to (s + 1) * cell pixels
per axis (cell = ceil(side / s)) the way skimage's resize(order=1, mode='reflect', anti_aliasing=False) does it
(half-pixel centres, mirrored at the border), then cropped to the image at a random shift in [0, cell) per axis.
Upsampling and cropping are one row and one column interpolation matrix per mask, so a batch of masks is a batched
matrix product Uh_n @ grid_n @ Uw_n^T.

Mask i is a function of (seed, i) alone: its grid and shifts are the i-th fixed-size block of one PCG64 stream,
reached by advancing the generator, so any range of masks is drawn without the ones before it and the same seed
gives the same masks whatever the batching or the total count.
"""

from __future__ import annotations

import functools
import math

import numpy as np


def cell_sizes(size: tuple[int, int], grid_size: int) -> tuple[int, int]:
    """Pixels per grid cell along each axis: ceil(side / s), as the official code."""
    return (math.ceil(size[0] / grid_size), math.ceil(size[1] / grid_size))


def upsampling_matrix(grid_size: int, cell: int) -> np.ndarray:
    """((s + 1) * cell, s) float64 matrix U with U @ g = the bilinear upsampling of a length-s signal g to
    (s + 1) * cell samples: half-pixel centres, sample positions outside [0, s - 1] mirrored at the edge pixel."""
    out = (grid_size + 1) * cell
    position = (np.arange(out) + 0.5) * (grid_size / out) - 0.5
    position = np.abs(position)  # mirror below 0 (never reaches -1)
    position = np.where(position > grid_size - 1, 2 * (grid_size - 1) - position, position)  # mirror above s - 1
    lower = np.clip(np.floor(position).astype(np.int64), 0, grid_size - 1)
    upper = np.minimum(lower + 1, grid_size - 1)
    fraction = position - lower
    matrix = np.zeros((out, grid_size))
    rows = np.arange(out)
    np.add.at(matrix, (rows, lower), 1.0 - fraction)
    np.add.at(matrix, (rows, upper), fraction)
    return matrix


@functools.lru_cache(maxsize=32)
def _upsampling_matrix32(grid_size: int, cell: int) -> np.ndarray:
    """upsampling_matrix in float32, built once per (grid, cell) instead of once per batch (np.add.at is slow: a
    third of the masks' time on a 28x28 image). Read-only, since every caller shares it."""
    matrix = upsampling_matrix(grid_size, cell).astype(np.float32)
    matrix.setflags(write=False)
    return matrix


def interpolation_matrices(shifts: np.ndarray, size: tuple[int, int], grid_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, H, s) row and (n, W, s) column float32 matrices for masks with these (n, 2) (row, column) shifts: the
    upsampling with each mask's crop folded in, so mask_i = rows_i @ grid_i @ cols_i^T."""
    height, width = size
    cell_h, cell_w = cell_sizes(size, grid_size)
    rows, cols = _upsampling_matrix32(grid_size, cell_h), _upsampling_matrix32(grid_size, cell_w)
    # A crop at `shift` keeps rows shift..shift+H of U.
    return rows[shifts[:, 0, None] + np.arange(height)], cols[shifts[:, 1, None] + np.arange(width)]


def upsample_grids(grids: np.ndarray, shifts: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(n, H, W) float32 masks from (n, s, s) grids and (n, 2) integer (row, column) shifts in [0, cell)."""
    row_matrices, col_matrices = interpolation_matrices(shifts, size, grids.shape[1])
    return row_matrices @ grids.astype(np.float32) @ col_matrices.transpose(0, 2, 1)


def draw_grids(
    seed: int, start: int, stop: int, grid_size: int, keep_prob: float, cells: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Binary (n, s, s) float32 grids and (n, 2) int64 shifts of masks [start, stop): each mask takes the next
    s * s + 2 uniforms of the seed's PCG64 stream (cells kept where u < p, shifts = floor(u * cell))."""
    per_mask = grid_size * grid_size + 2
    generator = np.random.PCG64(seed)
    # Generator.random draws one 64-bit output per float64, so mask `start` begins `start * per_mask` outputs in.
    generator.advance(start * per_mask)
    uniforms = np.random.Generator(generator).random((stop - start, per_mask))
    grids = (uniforms[:, : grid_size * grid_size] < keep_prob).astype(np.float32).reshape(-1, grid_size, grid_size)
    shifts = np.floor(uniforms[:, -2:] * np.asarray(cells)).astype(np.int64)
    return grids, shifts


def rise_masks(
    seed: int, start: int, stop: int, size: tuple[int, int], grid_size: int = 7, keep_prob: float = 0.5
) -> np.ndarray:
    """(stop - start, H, W) float32 RISE masks with values in [0, 1]; mask i depends only on (seed, i) and the
    mask settings."""
    grids, shifts = draw_grids(seed, start, stop, grid_size, keep_prob, cell_sizes(size, grid_size))
    return upsample_grids(grids, shifts, size)
