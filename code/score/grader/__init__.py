"""Answer checking: extract the final answer of a solution and decide whether two answers are equal.

Model output is hostile input. Nothing here passes it to eval, sympify or parse_expr: answers go
through a whitelisting tokenizer and a small recursive-descent parser that builds its own tree,
with limits on length, nesting, integer sizes, exponents and factorials. Most pairs are settled
in-process by exact arithmetic (rationals, Gaussian rationals, polynomials in the variables and
in pi). Only the rest (radicals, functions, division by variables) goes to sympy, which runs in a
reusable helper process that is killed when the time is up, so every call returns in time from
any thread.

The stages, one file each, in the order an answer meets them:
    extract.py    the final answer of a solution (strict: explicit markers such as \\boxed{} or "the answer is
                  N", a box or final-answer form outranking a later bare "the answer is"; the value an <answer>
                  tag or JSON field states; lenient: also the value its last sentence states)
    normalize.py  answer string -> canonical string and unit (wrappers, units, labels, words, times, numerals)
    parse.py      canonical string -> tree (whitelisted tokens, recursive descent, answer structure)
    exact.py      exact arithmetic on trees (rationals, polynomials in variables, pi, e, i)
    symbolic.py   trees -> sympy, in a helper process killed when the time is up
    reals.py      sets of reals in every notation (intervals, unions, inequalities) as one form
    compare.py    is_equivalent: structures compared, scalars exactly or through the helper
    batch.py      reward and rewards: one solution, or a batch over a process pool
limits.py holds the limits on input size and the exceptions the stages raise to each other; units.py the
vocabulary of units and of numbers written in words.
"""

from score.grader.batch import reward, rewards
from score.grader.compare import is_equivalent
from score.grader.extract import extract_answer

__all__ = ["extract_answer", "is_equivalent", "reward", "rewards"]
