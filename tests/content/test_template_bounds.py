"""Hostile templates end within the budget, in bounded memory, with a RenderError naming the reason.

Every template of the corpus is compiled and rendered as a block would be, in a
child process whose address space is capped (RLIMIT_AS, so a template that
escapes the bounds fails the child instead of the machine). The child measures
each render's wall time and its peak of Python allocations (tracemalloc), and
its own peak RSS; the test asserts on those numbers.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from content.bounds import MAX_STEPS, TIME_BUDGET_SECONDS
from content.rendering import Budget, RenderError, compile_part, compile_text, render, render_context

ROOT = Path(__file__).resolve().parents[2]
ADDRESS_SPACE = 2 * 1024**3  # the child's cap: far above what a bounded render needs, far below what these make
PEAK_BYTES = 64 * 1024**2  # what one hostile render may allocate at its peak
SECONDS = TIME_BUDGET_SECONDS + 2.5  # the budget, and room for one filter call under tracemalloc on a busy machine

# Each template, and what its RenderError must say.
CORPUS = {
    "nested empty loops": (
        "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
        "loop steps|longer than",
    ),
    "a large product printed in a loop": ("{% for i in range(255) %}{{ 'a'*10**7 }}{% endfor %}", "would be"),
    "a huge format width": ("{{ '%999999999d'|format(1) }}", "would be"),
    "a huge % width": ("{{ '%999999999d' % 1 }}", "would be"),
    "a constant product": ("{{ 'a'*10**9 }}", "would be"),
    "a list product": ("{{ [1, 2] * 10**8 }}", "would be"),
    "a power": (
        "{% set ns = namespace(n=7) %}{% for i in range(64) %}{% set ns.n = ns.n ** 2 %}{% endfor %}",
        "digits",
    ),
    "a product of integers": (
        "{% set ns = namespace(n=2) %}{% for i in range(64) %}{% set ns.n = ns.n * ns.n %}{% endfor %}",
        "digits",
    ),
    "recursion through a macro": ("{% macro m(n) %}{{ m(n + 1) }}{% endmacro %}{{ m(0) }}", "too deeply"),
    "a macro that calls itself twice": (
        "{% macro m(n) %}{% if n < 40 %}{{ m(n + 1) }}{{ m(n + 1) }}{% endif %}{% endmacro %}{{ m(0) }}",
        "loop steps|longer than",
    ),
    "doubling with ~ in a loop": (
        "{% set ns = namespace(x='ab') %}{% for i in range(40) %}{% set ns.x = ns.x ~ ns.x %}{% endfor %}",
        "would be",
    ),
    "doubling with + in a loop": (
        "{% set ns = namespace(x='ab') %}{% for i in range(40) %}{% set ns.x = ns.x + ns.x %}{% endfor %}",
        "would be",
    ),
    "doubling captured text": (
        "{% set ns = namespace(x='ab') %}{% for i in range(40) %}{% set y %}{{ ns.x }}{{ ns.x }}{% endset %}"
        "{% set ns.x = y %}{% endfor %}",
        "would be",
    ),
    "a list grown in a loop": (
        "{% set ns = namespace(l=[]) %}{% for i in range(100000) %}{% set ns.l = ns.l + [i] %}{% endfor %}",
        "MB of values|would be",
    ),
    "join on a range": ("{{ range(100000)|join(',') }}", "would be"),
    "join of large strings": ("{% set s = 'a' * 500000 %}{{ ([s] * 1000)|join }}", "would be"),
    "printing a list of large strings": ("{% set s = 'a' * 500000 %}{{ [s] * 1000 }}", "would be"),
    "center": ("{{ 'a'|center(10**9) }}", "would be"),
    "indent": ("{{ 'a\nb'|indent(10**9) }}", "would be"),
    "wordwrap": ("{{ ('a' * 500000)|wordwrap(1) }}", "lines"),
    "replace": ("{{ ('a' * 500000)|replace('a', 'bbbbbbbbbb') }}", "would be"),
    "batch with a fill": ("{{ range(10)|batch(10**9, 'x')|list }}", "would be"),
    "slice into a billion": ("{{ range(100000)|slice(10**9)|list }}", "loop steps|longer than"),
    "a slow filter on a large string in a loop": (
        "{% set s = 'a b.example ' * 10000 %}{% for i in range(1000) %}{{ s|urlize|length }}{% endfor %}",
        "longer than",
    ),
    "range(10**9)|list": ("{{ range(10**9)|list }}", "Range too big"),
    "lipsum": ("{{ lipsum(10**6) }}", "lipsum"),
    "ljust": ("{{ 'a'.ljust(10**9) }}", "would be"),
    "rjust": ("{{ 'a'.rjust(10**9) }}", "would be"),
    "zfill": ("{{ 'a'.zfill(10**9) }}", "would be"),
    "expandtabs": ("{{ '\t\t'.expandtabs(10**9) }}", "would be"),
    "str.format width": ("{{ '{:>999999999}'.format(1) }}", "would be"),
    "str.format_map width": ("{{ '{x:>999999999}'.format_map({'x': 1}) }}", "would be"),
    "str.join": ("{% set s = 'a' * 500000 %}{{ ''.join([s] * 1000) }}", "would be"),
    "translate": ("{{ ('a' * 1000).translate({97: 'b' * 100000}) }}", "would be"),
    "recursive loop": ("{% for x in [[1]] recursive %}{{ loop([[1], [1]]) }}{% endfor %}", "too deeply|loop steps"),
}


def _child() -> None:
    """Render every template of the corpus; one JSON line per template, then the peak RSS."""
    import tracemalloc

    for name, (source, _) in CORPUS.items():
        tracemalloc.start()
        started = time.perf_counter()
        try:
            part = compile_part(f"<p>{source}</p>", None, fragment=True, register_links=lambda urls: [])
            from content.rendering import render_part

            render_part(part, render_context(contact={"first_name": "Ana"}), Budget())
            error = None
        except RenderError as exc:
            error = str(exc)
        seconds = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        print(json.dumps({"name": name, "error": error, "seconds": seconds, "peak": peak}), flush=True)
    print(json.dumps({"max_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}), flush=True)


def _limit_address_space() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


@pytest.fixture(scope="module")
def outcomes() -> dict:
    process = subprocess.run(
        [sys.executable, "-c", "from tests.content.test_template_bounds import _child; _child()"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=_limit_address_space,
    )
    assert process.returncode == 0, process.stderr[-3000:]
    lines = [json.loads(line) for line in process.stdout.splitlines()]
    return {line.get("name", "rss"): line for line in lines}


@pytest.mark.parametrize("name", list(CORPUS))
def test_a_hostile_template_fails_within_the_budget_in_bounded_memory(outcomes, name):
    outcome = outcomes[name]
    assert outcome["error"] is not None, f"{name} rendered"
    assert any(reason in outcome["error"] for reason in CORPUS[name][1].split("|")), outcome["error"]
    assert outcome["seconds"] < SECONDS
    assert outcome["peak"] < PEAK_BYTES


def test_the_whole_corpus_stays_in_bounded_memory(outcomes):
    assert outcomes["rss"]["max_rss_kib"] < 400 * 1024


def test_constant_expressions_are_not_computed_while_compiling():
    """Jinja folds constants at compile time; an intercepted operator and a context filter never are."""
    import tracemalloc

    tracemalloc.start()
    for source in ("{{ 'a' * 10**9 }}", "{{ 'a'|center(10**9) }}", "{{ '%999999999d'|format(1) }}", "{{ 9**999999 }}"):
        template = compile_text(source)
        assert "a" * 1000 not in template.environment.compile(source, raw=True)
        with pytest.raises(RenderError):
            render(template, render_context(), Budget())
    assert tracemalloc.get_traced_memory()[1] < 16 * 1024**2
    tracemalloc.stop()


def test_ordinary_templates_are_untouched_by_the_bounds():
    source = (
        "{% set names = ['ana', 'bob'] %}{% for n in names %}{{ loop.index }}. {{ n|title|center(7) }}"
        "{{ '%3d'|format(loop.index) }} {{ '{:>4}'.format(n) }} {{ ('x' * 3) ~ '-' ~ (n * 2) }};{% endfor %}"
        " {{ range(3)|join(',') }} {{ 2 ** 10 }} {{ 'a\tb'.expandtabs(2) }} {{ 'ab'.ljust(4, '.') }}"
    )
    out = render(compile_text(source), render_context(), Budget())
    assert out == ("1.   Ana    1  ana xxx-anaana;2.   Bob    2  bob xxx-bobbob; 0,1,2 1024 a b ab..")


def test_the_step_limit_counts_loop_iterations_whatever_the_body():
    steps = int(MAX_STEPS**0.5) + 1
    template = compile_text(
        f"{{% for a in range({steps}) %}}{{% for b in range({steps}) %}}{{% endfor %}}{{% endfor %}}"
    )
    with pytest.raises(RenderError, match="loop steps"):
        render(template, render_context(), Budget(seconds=60))


def test_a_render_stalled_by_the_machine_is_retryable():
    """SIGSTOP the rendering process: its wall clock runs out while it has had little CPU."""
    script = (
        "from content.rendering import *; import sys, time\n"
        "t = compile_text('{% for a in range(900) %}{% for b in range(900) %}{% set c = (b ~ a) * 3 %}"
        "{% endfor %}{% endfor %}')\n"
        "budget = Budget(seconds=float(sys.argv[1]))\n"
        "print('ready', flush=True)\n"
        "try:\n"
        "    render(t, render_context(), budget)\n"
        "    print('rendered')\n"
        "except RenderError as e:\n"
        "    print(e.retryable, e)\n"
    )
    stopped = subprocess.Popen([sys.executable, "-c", script, "0.5"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert stopped.stdout.readline().strip() == "ready"
    os.kill(stopped.pid, signal.SIGSTOP)
    time.sleep(1.5)
    os.kill(stopped.pid, signal.SIGCONT)
    out, _ = stopped.communicate(timeout=60)
    assert out.startswith("True rendering took longer than 0.5 s (the machine was busy"), out


def test_a_template_using_lipsum_is_refused_when_it_is_checked():
    from content.checking import check_template

    (problem,) = check_template("<p>{{ lipsum(10**6) }}</p>", "block")
    assert problem.message.startswith("lipsum: no such name")
