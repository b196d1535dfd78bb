"""Which lines of a function made the detector flag it.

``load_explainer(model_dir, detector=None, ig_steps=16).line_scores(funcs)`` returns one score
per source line of every function
(:mod:`streamguard_core.explain.lines` maps attributions to lines):

- transformer: integrated gradients (Captum) through the input embeddings, token scores
  mapped to lines with the tokenizer's character offsets;
- GNN: integrated gradients through the node embeddings, node scores mapped to the line each
  AST node starts on;
- baseline (TF-IDF + logistic regression): each term's weight x its TF-IDF value, spread over
  the term's occurrences; code-metric trees have no per-line signal (all zeros);
- fusion: every base model's line scores, each normalised to unit mass, weighted by the
  combiner's mixture.
"""

from streamguard_core.explain.explainer import Explainer, file_top_lines, load_explainer
from streamguard_core.explain.lines import (
    LineScore,
    char_scores_to_lines,
    code_lines,
    line_starts,
    top_lines,
)

__all__ = [
    "Explainer",
    "LineScore",
    "char_scores_to_lines",
    "code_lines",
    "file_top_lines",
    "line_starts",
    "load_explainer",
    "top_lines",
]
