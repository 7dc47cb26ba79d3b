"""Every command shown in README.md and docs/*.md parses: known tasks, known config keys, files that exist.

A command is a line of a fenced bash/sh/shell block (backslash continuations joined, comments dropped, split at
&&, ||, ; and |). Checked without running anything: `code/main.py` arguments (also after `accelerate launch`) go
through main.py's own parser and score.config's load_config with the --config file given; `sbatch run.slurm`
arguments the same way with run.slurm's CONFIG; `make` targets against the Makefile; a `bench/` script's flags
against its source; every repository path a command names must exist. `--set section.key=` anywhere in the
text, prose included, must name a known key. Relative links must lead to a file and heading that exist, and
docs/layout.md must list every module.
"""

import contextlib
import io
import re
import shlex
from pathlib import Path

import main
import pytest
from score.config import REPO_ROOT, Config, ScoreError, load_config

DOCS = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
SHELL_FENCE = re.compile(r"^```(bash|sh|shell)\s*$")
SEPARATORS = {"&&", "||", ";", "|"}
# Top-level folders whose paths in a command must exist; the others (data/, saved_models/, ...) are outputs.
SOURCE_FOLDERS = ("code/", "configs/", "bench/", "tests/", "docs/", ".ci/")
SOURCE_FILES = re.compile(r"^(requirements[\w-]*\.txt|environment\.yml|run\.slurm|Makefile|pyproject\.toml)$")
SLURM_DEFAULT_CONFIG = "configs/default.yaml"  # run.slurm: CONFIG=${CONFIG:-configs/default.yaml}
INLINE_SET = re.compile(r"--set[ =]\"?([A-Za-z_]\w*)\.([A-Za-z_]\w*)=")
LINK = re.compile(r"\]\(([^)\s]+)\)")


def shell_commands(text: str) -> list[tuple[int, str]]:
    """(line number, command line) of every fenced shell block, continuations joined."""
    commands, inside, pending, start = [], False, "", 0
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("```"):
            inside = not inside and bool(SHELL_FENCE.match(line))
            continue
        if not inside:
            continue
        if not pending:
            start = number
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        commands.append((start, pending + line))
        pending = ""
    return commands


def make_targets() -> set[str]:
    text = (REPO_ROOT / "Makefile").read_text()
    return set(re.findall(r"^([A-Za-z][\w.-]*):(?!=)", text, re.MULTILINE))


def check_main_args(args: list[str], default_config: str | None = None) -> list[str]:
    """What is wrong with main.py's arguments: argparse's message, or load_config's one line."""
    if default_config is not None and "--config" not in args:
        args = ["--config", default_config, *args]
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            parsed = main.parse_args(args)
    except SystemExit:
        return [f"main.py {' '.join(args)}: {stderr.getvalue().strip().splitlines()[-1]}"]
    config = Path(parsed.config)
    if not config.is_absolute():
        config = REPO_ROOT / config  # main.py: relative to the working directory, else to the repository
    try:
        load_config(config, parsed.overrides)
    except ScoreError as e:
        return [f"main.py {' '.join(args)}: {e}"]
    return []


def check_bench_flags(script: Path, args: list[str]) -> list[str]:
    source = script.read_text()
    flags = {arg.split("=")[0] for arg in args if arg.startswith("--")}
    return [f"{script.relative_to(REPO_ROOT)} has no option {flag}" for flag in sorted(flags)
            if f'"{flag}"' not in source]  # fmt: skip


def check_paths(words: list[str]) -> list[str]:
    problems = []
    for word in words:
        path = word.split("=", 1)[-1] if word.startswith("--") else word
        if not (path.startswith(SOURCE_FOLDERS) or SOURCE_FILES.match(path)) or "*" in path or "<" in path:
            continue
        if not (REPO_ROOT / path).exists():
            problems.append(f"{path} does not exist")
    return problems


def check_command(words: list[str], env: dict[str, str]) -> list[str]:
    """Problems of one simple command (its words after the environment assignments)."""
    missing = check_paths(words)  # a --config, an accelerate --config_file, a script, a requirements file
    if missing:  # the checks below would only say it again
        return missing
    names = [Path(word).name for word in words]
    if "main.py" in names:
        return check_main_args(words[names.index("main.py") + 1 :])
    if words[0] == "make":
        targets = make_targets()
        return [f"make has no target {word}" for word in words[1:] if "=" not in word and word not in targets]
    if words[0] == "sbatch":
        if "run.slurm" not in names:
            return ["sbatch of no run.slurm"]
        config = env.get("CONFIG", SLURM_DEFAULT_CONFIG)
        arguments = [*shlex.split(env.get("EXTRA", "")), *words[names.index("run.slurm") + 1 :]]
        return check_paths([config]) or check_main_args(["--task", "train", *arguments], config)
    scripts = [i for i, word in enumerate(words) if word.startswith("bench/") and word.endswith(".py")]
    return check_bench_flags(REPO_ROOT / words[scripts[0]], words[scripts[0] + 1 :]) if scripts else []


def check_line(line: str, variables: dict[str, str]) -> list[str]:
    """Problems of one shell line; `variables` collects the line's plain assignments (C=configs/x.yaml)."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split, lexer.commenters = True, "#"
    try:
        words = list(lexer)
    except ValueError as e:
        return [f"cannot split the line: {e}"]
    problems, command = [], []
    for word in [*words, ";"]:
        if word not in SEPARATORS:
            command.append(word)
            continue
        for name, value in variables.items():
            command = [part.replace("${" + name + "}", value).replace("$" + name, value) for part in command]
        env = {}
        while command and re.match(r"^[A-Za-z_]\w*=", command[0]):
            name, _, value = command.pop(0).partition("=")
            env[name] = value
        if command and command[0] == "export":
            command = []
        if command:
            problems += check_command(command, env)
        elif len(env) == 1:  # a plain assignment, used later in the block
            variables.update(env)
        command = []
    return problems


def check_inline_sets(text: str) -> list[str]:
    known = {f.name: set(getattr(Config(), f.name).__dataclass_fields__) for f in Config.__dataclass_fields__.values()}
    return [f"--set {section}.{key}: not a config key" for section, key in INLINE_SET.findall(text)
            if (section, key) != ("section", "key") and key not in known.get(section, ())]  # fmt: skip


def check_doc(text: str, name: str) -> list[str]:
    """Problems of one page, each as `name:line: problem` (`name: problem` for prose)."""
    problems, variables = [], {}
    for number, line in shell_commands(text):
        problems += [f"{name}:{number}: {problem}" for problem in check_line(line, variables)]
    return problems + [f"{name}: {problem}" for problem in check_inline_sets(text)]


def anchors(text: str) -> set[str]:
    """GitHub's anchors of a page's headings (lower case, punctuation dropped, spaces to hyphens)."""
    headings, inside = [], False
    for line in text.splitlines():
        inside ^= line.startswith("```")
        if not inside and line.startswith("#"):
            headings.append(line.lstrip("#").strip())
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


def broken_links(path: Path) -> list[str]:
    """Relative links of a page whose file or heading does not exist."""
    problems = []
    for target in LINK.findall(path.read_text()):
        if target.startswith(("http://", "https://")):
            continue
        file, _, anchor = target.partition("#")
        linked = (path.parent / file).resolve() if file else path
        if not linked.exists():
            problems.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked.read_text()):
            problems.append(f"{target}: no such heading")
    return problems


@pytest.mark.parametrize("doc", DOCS, ids=lambda path: str(path.relative_to(REPO_ROOT)))
def test_every_link_in_the_docs_leads_somewhere(doc):
    assert broken_links(doc) == []


def test_a_broken_link_is_caught(tmp_path):
    (tmp_path / "other.md").write_text("# Other page\n\n```bash\n# not a heading\n```\n## Why Δ: `--x` varied\n")
    page = tmp_path / "page.md"
    page.write_text(
        "[a](other.md) [b](other.md#why-δ---x-varied) [c](#here) [d](https://x.org/#y)\n# Here\n"
        "[e](missing.md) [f](other.md#not-a-heading) [g](#nowhere)\n"
    )
    assert broken_links(page) == ["missing.md: no such file", "other.md#not-a-heading: no such heading",
                                  "#nowhere: no such heading"]  # fmt: skip


@pytest.mark.parametrize("doc", DOCS, ids=lambda path: str(path.relative_to(REPO_ROOT)))
def test_every_command_in_the_docs_parses(doc):
    assert check_doc(doc.read_text(), str(doc.relative_to(REPO_ROOT))) == []


def test_the_docs_show_commands():
    """The checker reads the blocks: README's own commands are found (an empty list would pass anything)."""
    lines = [line for _, line in shell_commands((REPO_ROOT / "README.md").read_text())]
    assert any(line.startswith("make demo") for line in lines) and any(line.startswith("make test") for line in lines)
    assert sum("code/main.py" in line for line in lines) >= 5 and any("sbatch" in line for line in lines)


def test_ci_runs_the_test_command_readme_shows():
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, re.MULTILINE)
    assert "make test" in [
        line.split("#")[0].strip() for _, line in shell_commands((REPO_ROOT / "README.md").read_text())
    ]


def test_every_docs_page_is_linked_from_the_readme():
    readme = (REPO_ROOT / "README.md").read_text()
    for page in DOCS[1:]:
        assert f"(docs/{page.name}" in readme, page.name


@pytest.mark.parametrize(
    "line, problem",
    [
        ("python code/main.py --task trian", "invalid choice: 'trian'"),
        ("python code/main.py --task train --set train.learning_rate=1e-5", "unknown config key 'train.learning_rate'"),
        ("python code/main.py --task train --set trian.lr=1e-5", "unknown config section 'trian'"),
        ("python code/main.py --task train --set train.lr=-1", "train.lr"),
        (".venv/bin/python code/main.py --task evaluate --config configs/nope.yaml", "configs/nope.yaml"),
        ("cd code && python main.py --task train --set eval.modle=base", "eval.modle"),
        (
            "OMP_NUM_THREADS=1 python code/main.py --task download --config configs/testbed.yaml "
            "--set download.bultin=testbed",
            "download.bultin",
        ),
        ("accelerate launch --config_file configs/accelerate/nope.yaml code/main.py --task train", "nope.yaml"),
        ("make demos", "make has no target demos"),
        ("python bench/nope.py --steps 1", "bench/nope.py does not exist"),
        ("python bench/train_bench.py --stepz 1", "has no option --stepz"),
        ("sbatch --gres=gpu:8 run.slurm --set train.run_nam=x", "train.run_nam"),
        ("CONFIG=configs/nope.yaml sbatch run.slurm", "configs/nope.yaml does not exist"),
        ("C=configs/nope.yaml; python code/main.py --task train --config $C", "nope.yaml"),
        ("pip install -r requirements-nope.txt", "requirements-nope.txt does not exist"),
    ],
)
def test_a_wrong_command_is_caught(line, problem):
    problems = check_line(line, {})
    assert len(problems) == 1 and problem in problems[0], problems


@pytest.mark.parametrize(
    "line",
    [
        "python code/main.py --task train --set train.lr=1e-5 --set train.run_name=lr1e5  # a comment --set x.y=1",
        'python code/main.py --task experiment --config configs/testbed.yaml --set "experiment.rows=[star, score]"',
        "CONFIG=configs/tiny.yaml NPROC=2 sbatch --gres=none --cpus-per-task=2 run.slurm",
        "make demo && make clean-demo",
        "OMP_NUM_THREADS=2 .venv-vllm/bin/python bench/rollout_bench.py --engines hf,vllm",
    ],
)
def test_a_right_command_passes(line):
    assert check_line(line, {}) == []


def test_a_page_is_read_across_continuations_and_variables():
    text = (
        "```bash\nC=configs/tiny.yaml\npython code/main.py --task train \\\n    --config $C --set train.lr=x\n```\n"
        "```\npython code/main.py --task nothing   # not a shell block\n```\n"
        "Prose: `--set train.nope=1`.\n"
    )
    problems = check_doc(text, "page.md")
    assert len(problems) == 2, problems
    assert problems[0].startswith("page.md:3: ") and "train.lr" in problems[0]
    assert problems[1].startswith("page.md: ") and "train.nope" in problems[1]


def test_the_layout_page_lists_every_module():
    layout = (REPO_ROOT / "docs" / "layout.md").read_text()
    modules = [
        path for path in (REPO_ROOT / "code" / "score").iterdir() if path.name not in ("__init__.py", "__pycache__")
    ]
    for path in modules:
        assert f"code/score/{path.name}{'/' if path.is_dir() else ''} " in layout, path.name


def test_what_the_makefile_says_of_the_readme_holds():
    """The Makefile's demo comment names a README section and its time; the section keeps both."""
    makefile, readme = (REPO_ROOT / "Makefile").read_text(), (REPO_ROOT / "README.md").read_text()
    (seconds, section), *_ = re.findall(r"(\d+) s on 2 cores.*\(README, \"([^\"]+)\"\)", makefile)
    assert f"\n## {section}\n" in readme
    text = readme.split(f"\n## {section}\n")[1].split("\n## ")[0]
    assert f"took {seconds} s" in text and "make demo" in text and "make test" in text
