"""What a model version must be before the server works on it: which files it may make the server read, how many
bytes, and a graph without cycles.

ONNX external data names weight files by path, a known traversal: a tensor's `location` may say '../', an absolute
path, ONNX Runtime's in-memory address tag (its `offset` is then read as a pointer), or a link that leads anywhere.
A version may read only regular files inside its own folder, inside the configured repository, within a size limit.
A graph whose nodes feed each other in a loop is refused before anything walks it: walks that follow producers
(the output's activation, the paths gradients take) would never end on it. A graph without one whose nodes are out
of order is put in order (see sort_nodes).
Each check returns the reason a model is refused, or None.
"""

from __future__ import annotations

import heapq
import os
from collections import defaultdict
from pathlib import Path

import onnx

from onnxplain.server.engine.backward.graph import all_tensors, subgraphs
from onnxplain.server.observability.names import shortened

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
    for tensor in all_tensors(model):
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


def sort_nodes(graph: onnx.GraphProto, where: str = "the graph") -> str | None:
    """Put the nodes of the graph and of its subgraphs in topological order, in place; or the reason they cannot be
    (a cycle: the nodes on it and those fed by it). ONNX requires the order, and shape inference and the backward
    graphs' walks rely on it, but converters sometimes emit nodes out of it; ONNX Runtime sorts them itself, so such a
    model serves, and sorted here every method runs on it too. A graph already in order is left as it is."""
    nodes = list(graph.node)
    inner = [list(subgraphs(node)) for node in nodes]
    order = _topological_order(nodes, inner)
    if len(order) < len(nodes):
        placed = set(order)
        stuck = [node for index, node in enumerate(nodes) if index not in placed]
        shown = ", ".join(f"{shortened(node.name or node.output[0])!r} ({node.op_type})" for node in stuck[:5])
        more = f" and {len(stuck) - 5} more" if len(stuck) > 5 else ""
        return f"{where} has a cycle (ONNX graphs must be acyclic): nodes {shown}{more} are on it or fed by it"
    # Subgraphs first: their nodes are sorted where they are, then the nodes holding them are moved.
    for graphs in inner:
        for subgraph in graphs:
            problem = sort_nodes(subgraph, f"subgraph {shortened(subgraph.name)!r}")
            if problem is not None:
                return problem
    if order != list(range(len(nodes))):
        del graph.node[:]
        graph.node.extend(nodes[index] for index in order)
    return None


def _topological_order(nodes: list[onnx.NodeProto], inner: list[list[onnx.GraphProto]]) -> list[int]:
    """Kahn's topological sort, the earliest ready node first (nodes already in order keep it): the indices of the
    nodes it reaches, in order. Inputs no node of this graph makes (graph inputs, initializers, names of an enclosing
    graph) are available from the start; a node with subgraphs also waits for the names they read from this graph."""
    producers = {name: index for index, node in enumerate(nodes) for name in node.output if name}
    consumers: defaultdict[int, list[int]] = defaultdict(list)
    waiting = []
    for index, (node, graphs) in enumerate(zip(nodes, inner, strict=True)):
        reads = set(node.input).union(*(_outer_names(graph) for graph in graphs))
        needs = {producers[name] for name in reads if name in producers}
        for producer in needs:
            consumers[producer].append(index)
        waiting.append(len(needs))
    ready = [index for index, count in enumerate(waiting) if count == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        index = heapq.heappop(ready)
        order.append(index)
        for consumer in consumers[index]:
            waiting[consumer] -= 1
            if waiting[consumer] == 0:
                heapq.heappush(ready, consumer)
    return order


def _outer_names(graph: onnx.GraphProto) -> set[str]:
    """The names a subgraph's nodes (and theirs, to any depth) read from the graphs around it."""
    defined = {value.name for value in graph.input} | {tensor.name for tensor in graph.initializer}
    defined |= {sparse.values.name for sparse in graph.sparse_initializer}
    read: set[str] = set()
    for node in graph.node:
        defined.update(node.output)
        read.update(node.input)
        for subgraph in subgraphs(node):
            read |= _outer_names(subgraph)
    return read - defined


def _size_problem(what: str, size: int, max_bytes: int) -> str | None:
    if size <= max_bytes:
        return None
    return f"{what} {size} bytes, more than the model size limit of {max_bytes} bytes (--max-model-bytes)"


def _inside(path: Path, folder: Path) -> bool:
    return folder in path.parents
