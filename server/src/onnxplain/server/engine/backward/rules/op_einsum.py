"""VJP rule: Einsum (attention and bilinear layers written as torch.einsum). The gradient of one operand is another
Einsum, of the output's gradient and the other operands, back to that operand's subscripts: every letter it sums
over is summed again. A letter only that operand has (summed away in the forward) gets the gradient broadcast over it.

Ellipses are spelt out as letters when every operand that has one covers the output's broadcast dimensions with the
same sizes; broadcasting inside the ellipsis and repeated letters within one operand (diagonals, traces) raise
NotImplementedError.
"""

from __future__ import annotations

import string

from onnxplain.server.engine.backward.context import BackwardContext, UnknownShape
from onnxplain.server.engine.backward.rules.registry import ForwardNode, Gradients, vjp


@vjp("Einsum")
def einsum(ctx: BackwardContext, node: ForwardNode, grads: Gradients) -> list[str | None]:
    terms, output = _explicit(ctx, node)
    grad = grads[0]
    results: list[str | None] = []
    for index, (operand, letters) in enumerate(zip(node.inputs, terms, strict=True)):
        if not ctx.needs(operand):
            results.append(None)
            continue
        others = [(name, term) for i, (name, term) in enumerate(zip(node.inputs, terms, strict=True)) if i != index]
        available = set(output).union(*(term for _, term in others))
        kept = "".join(letter for letter in letters if letter in available)
        equation = ",".join([output, *(term for _, term in others)]) + "->" + kept
        result = ctx.op("Einsum", [grad, *(name for name, _ in others)], equation=equation)
        if kept != letters:
            orphans = [axis for axis, letter in enumerate(letters) if letter not in available]
            result = ctx.expand_like(ctx.op("Unsqueeze", [result, ctx.ints(orphans)]), operand)
        results.append(result)
    return results


def _explicit(ctx: BackwardContext, node: ForwardNode) -> tuple[list[str], str]:
    """The operands' and the output's subscripts, with the implicit output (no "->") made explicit and ellipses
    spelt out."""
    equation = node.attrs["equation"].replace(" ", "")
    inputs, arrow, output = equation.partition("->")
    terms = inputs.split(",")
    if len(terms) != len(node.inputs):
        raise NotImplementedError(f"Einsum equation {equation!r} does not match its {len(node.inputs)} inputs")
    if not arrow:  # implicit: the ellipsis, then the letters used once, in alphabetical order
        letters = inputs.replace(",", "").replace(".", "")
        output = ("..." if "..." in inputs else "") + "".join(sorted(c for c in set(letters) if letters.count(c) == 1))
    for term in terms:
        named = term.replace("...", "")
        if len(set(named)) != len(named):
            raise NotImplementedError(f"Einsum with a repeated subscript in {term!r} (a diagonal or trace)")
    if "..." not in inputs:
        return terms, output
    filler = _ellipsis_letters(ctx, node, terms, equation)
    return [term.replace("...", filler) for term in terms], output.replace("...", filler)


def _ellipsis_letters(ctx: BackwardContext, node: ForwardNode, terms: list[str], equation: str) -> str:
    """Unused letters standing for the ellipsis's dimensions, which must be the same in every operand that has one
    (an unknown batch counts as the same)."""
    covered = set()
    for term, name in zip(terms, node.inputs, strict=True):
        if "..." in term:
            shape = ctx.shape(name)
            if shape is None:
                raise UnknownShape(name, shape)
            start = term.index("...")
            covered.add(tuple(shape[start : start + len(shape) - len(term) + 3]))
    if len(covered) != 1:
        raise NotImplementedError(f"Einsum {equation!r} broadcasts inside its ellipsis ({sorted(covered, key=len)})")
    spare = [c for c in string.ascii_letters if c not in equation]
    return "".join(spare[: len(covered.pop())])
