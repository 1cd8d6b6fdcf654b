"""Which files a model version may make the server read, and how many bytes.

ONNX external data names weight files by path, a known traversal: a tensor's `location` may say '../', an absolute
path, ONNX Runtime's in-memory address tag (its `offset` is then read as a pointer), or a link that leads anywhere.
A version may read only regular files inside its own folder, inside the configured repository, within a size limit.
Each check returns the reason a model is refused, or None.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import onnx

# ONNX Runtime's marker for weights already in memory: the location it gives `offset` as an address to read.
ORT_MEMORY_ADDRESS_TAG = "*/_ORT_MEM_ADDR_/*"


def model_file_problem(path: Path, repository: Path, max_bytes: int) -> str | None:
    """Checked before the file is parsed, so a model outside the repository or over the limit is never read."""
    folder = path.parent.resolve()
    if not _inside(folder, repository.resolve()):
        return f"{path.parent} leads outside the model repository through a link"
    if not _inside(path.resolve(), folder):
        return f"{path.name} is a link to a file outside its version folder"
    return _size_problem(f"{path.name} is", path.stat().st_size, max_bytes)


def external_data_problem(model: onnx.ModelProto, path: Path, max_bytes: int) -> str | None:
    """Every tensor's external data must be a regular file inside the model's folder; all files together (the model
    file included) must fit the size limit."""
    folder = path.parent.resolve()
    files: set[Path] = set()
    for tensor in _all_tensors(model):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((entry.value for entry in tensor.external_data if entry.key == "location"), "")
        problem = _location_problem(location, folder)
        if problem is not None:
            return f"tensor {tensor.name!r}: {problem}"
        files.add((folder / location).resolve())
    size = path.stat().st_size + sum(file.stat().st_size for file in files)
    return _size_problem(f"{path.name} and its external data take", size, max_bytes)


def _location_problem(location: str, folder: Path) -> str | None:
    if not location:
        return "its external data names no file"
    if location == ORT_MEMORY_ADDRESS_TAG:
        return "its external data location is ONNX Runtime's in-memory address tag"
    if Path(location).is_absolute() or not _inside(Path(os.path.normpath(folder / location)), folder):
        return f"its external data location {location!r} points outside the model folder (it must be a relative path)"
    target = (folder / location).resolve()
    if not _inside(target, folder):
        return f"its external data file {location!r} is a link to a file outside the model folder"
    if not target.is_file():
        return f"its external data file {location!r} is missing"
    return None


def _size_problem(what: str, size: int, max_bytes: int) -> str | None:
    if size <= max_bytes:
        return None
    return f"{what} {size} bytes, more than the model size limit of {max_bytes} bytes (--max-model-bytes)"


def _inside(path: Path, folder: Path) -> bool:
    return folder in path.parents


def _all_tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """Initializers, sparse initializers and tensor attributes, in the main graph, every subgraph and every function:
    wherever ONNX Runtime may look for external data."""
    yield from _graph_tensors(model.graph)
    for function in model.functions:
        for node in function.node:
            yield from _node_tensors(node)


def _graph_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield from (sparse.values, sparse.indices)
    for node in graph.node:
        yield from _node_tensors(node)


def _node_tensors(node: onnx.NodeProto) -> Iterator[onnx.TensorProto]:
    for attribute in node.attribute:
        if attribute.HasField("t"):
            yield attribute.t
        yield from attribute.tensors
        if attribute.HasField("sparse_tensor"):
            yield from (attribute.sparse_tensor.values, attribute.sparse_tensor.indices)
        for sparse in attribute.sparse_tensors:
            yield from (sparse.values, sparse.indices)
        if attribute.HasField("g"):
            yield from _graph_tensors(attribute.g)
        for graph in attribute.graphs:
            yield from _graph_tensors(graph)
