"""Token usage and prices: parsing the user's prices, summing usage, the usage block and its report line.

Prices only ever come from ``--price`` or the ``$PERSONA_EVAL_PRICES`` file; bad ones are one-line
usage errors naming the option or file:line. A verdict's usage sums every generator call behind it
(re-asks and P(A) probes); a generation's usage comes from the backend where it counted, else it is
estimated and says so. Cache values carry the new fields, and values written before them still read.
"""

from __future__ import annotations

import pytest

from persona_eval.contracts import registry
from persona_eval.contracts.records import GenParams, GenRequest, GenResult, PairRequest
from persona_eval.display.report import format_cost, format_tokens, usage_line
from persona_eval.errors import UsageError
from persona_eval.pipeline.generate import decode_result, encode_result
from persona_eval.scoring.usage import (
    PRICES_ENV,
    Price,
    UsageTally,
    add_usage,
    call_usage,
    estimate_tokens,
    load_prices,
    parse_price,
    parse_prices,
    price_for,
    read_price_file,
    weakest_source,
)

# ---- prices -----------------------------------------------------------------------------------


def test_price_option_takes_the_spec_as_given_options_included():
    assert parse_price("openai:gpt-4o=2.5:10") == ("openai:gpt-4o", Price(2.5, 10.0))
    model, price = parse_price("openai:gpt-4o,base_url=http://127.0.0.1:8000/v1=0.15:0.6")
    assert model == "openai:gpt-4o,base_url=http://127.0.0.1:8000/v1" and price == Price(0.15, 0.6)
    assert Price(2.5, 10).cost(1_000_000, 500_000) == pytest.approx(7.5)


@pytest.mark.parametrize("text, fragment", [
    ("openai:gpt-4o", "expected MODEL=IN_PER_1M:OUT_PER_1M"),
    ("openai:gpt-4o=2.5", "expected MODEL=IN_PER_1M:OUT_PER_1M"),
    ("=1:2", "expected MODEL=IN_PER_1M:OUT_PER_1M"),
    ("openai:gpt-4o=cheap:10", "input: expected dollars"),
    ("openai:gpt-4o=1:-3", "output: expected dollars"),
    ("openai:gpt-4o=1:nan", "output: expected dollars"),
])
def test_bad_price_options_are_one_line_usage_errors(text, fragment):
    with pytest.raises(UsageError, match=fragment) as caught:
        parse_price(text)
    assert "\n" not in str(caught.value) and caught.value.exit_code == 2


def test_a_model_priced_twice_is_an_error():
    with pytest.raises(UsageError, match="given twice"):
        parse_prices(["m:x=1:2", "m:x=3:4"])


def test_price_file_and_options_over_it(tmp_path):
    path = tmp_path / "prices.yaml"
    path.write_text('prices:\n  "openai:gpt-4o": {input_per_1m: 2.5, output_per_1m: 10}\n'
                    '  "openai:gpt-4o-mini": {input_per_1m: 0.15, output_per_1m: 0.6}\n', encoding="utf-8")
    assert read_price_file(path)["openai:gpt-4o"] == Price(2.5, 10)
    prices = load_prices(["openai:gpt-4o=1.25:5"], env={PRICES_ENV: str(path)})
    assert prices == {"openai:gpt-4o": Price(1.25, 5), "openai:gpt-4o-mini": Price(0.15, 0.6)}
    assert load_prices([], env={}) == {}
    # A spec with options finds the price given for its bare form; an unpriced spec finds none.
    assert price_for(prices, "openai:gpt-4o,batch=true") == Price(1.25, 5)
    assert price_for(prices, "hf:embedded") is None and price_for({}, "openai:gpt-4o") is None


@pytest.mark.parametrize("text, where, fragment", [
    ('prices:\n  "openai:gpt-4o": {input_per_1m: 2.5}\n', ":2", "expected exactly input_per_1m and output_per_1m"),
    ('prices:\n  "a:b": {input_per_1m: 1, output_per_1m: 2}\n  "c:d":\n    input_per_1m: lots\n    output_per_1m: 1\n',
     ":4", "input_per_1m: expected dollars"),
    ("prices: [1, 2]\n", ":1", "a price file holds one mapping"),
    ("prices:\n  a: {input_per_1m: 1, output_per_1m: 2\n", ":3", "invalid YAML"),
])
def test_bad_price_files_name_file_and_line(tmp_path, text, where, fragment):
    path = tmp_path / "prices.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(UsageError, match=fragment) as caught:
        load_prices([], env={PRICES_ENV: str(path)})
    assert str(caught.value).startswith(f"{path}{where}: "), str(caught.value)


def test_a_missing_price_file_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="cannot read the price file"):
        load_prices([], env={PRICES_ENV: str(tmp_path / "nope.yaml")})


# ---- counting ---------------------------------------------------------------------------------


def test_call_usage_takes_the_backend_counts_and_estimates_the_rest():
    request = GenRequest(id="x", prompt="a" * 40, system="s" * 8)
    assert call_usage(request, GenResult(text="hi", input_tokens=12, output_tokens=3, usage_source="api")) == {
        "requests": 1, "input_tokens": 12, "output_tokens": 3, "source": "api"}
    # Only the output counted: the input is estimated at 4 characters a token, and the call says so.
    assert call_usage(request, GenResult(text="hello there", output_tokens=2)) == {
        "requests": 1, "input_tokens": 12, "output_tokens": 2, "source": "estimated"}
    assert call_usage(request, GenResult(text="x" * 9)) == {"requests": 1, "input_tokens": 12, "output_tokens": 3,
                                                          "source": "estimated"}
    assert estimate_tokens("") == 0 and estimate_tokens("abcde") == 2


def test_sums_keep_the_least_exact_source():
    api = {"requests": 1, "input_tokens": 10, "output_tokens": 5, "source": "api"}
    guess = {"requests": 2, "input_tokens": 7, "output_tokens": 0, "source": "estimated"}
    assert add_usage(api, guess) == {"requests": 3, "input_tokens": 17, "output_tokens": 5, "source": "estimated"}
    assert add_usage(None, api) == api and add_usage(None, None) is None
    assert weakest_source(["api", "tokenizer", None]) == "tokenizer" and weakest_source([None]) is None


def test_cache_values_carry_usage_and_old_ones_still_read():
    result = GenResult(text="ok", finish_reason="stop", output_tokens=4, input_tokens=9, usage_source="tokenizer")
    value = encode_result(result)
    assert value == {"text": "ok", "finish_reason": "stop", "output_tokens": 4, "input_tokens": 9, "usage_source": "tokenizer"}
    assert decode_result(value).input_tokens == 9 and decode_result(value).cached
    # A value written before the usage fields existed.
    old = decode_result({"text": "ok", "finish_reason": "stop", "output_tokens": 4})
    assert (old.input_tokens, old.usage_source, old.output_tokens) == (None, None, 4)
    # Without counts the value is exactly what it always was.
    assert encode_result(GenResult(text="ok")) == {"text": "ok", "finish_reason": None, "output_tokens": None}


# ---- the usage block and its line -------------------------------------------------------------


def _tally() -> UsageTally:
    tally = UsageTally()
    for _ in range(3):
        tally.add("generate", "hf:embedded", cached=False, usage={"requests": 1, "input_tokens": 100, "output_tokens": 50,
                                                                  "source": "tokenizer"})
    tally.add("generate", "hf:embedded", cached=True, usage={"requests": 1, "input_tokens": 100, "output_tokens": 50,
                                                             "source": "tokenizer"})
    tally.add_resumed("generate", "hf:embedded", 2)
    for _ in range(4):
        tally.add("judge", "openai:gpt-4o", cached=False, usage={"requests": 2, "input_tokens": 1000, "output_tokens": 300,
                                                                 "source": "api"})
    tally.add_seconds("judge", "openai:gpt-4o", 1.234)
    return tally


def test_usage_block_counts_cached_and_resumed_work_as_not_spent():
    block = _tally().block(stats={"openai:gpt-4o": {"requests": 9, "retries": 1}})
    generate = block["generate"]["hf:embedded"]
    assert generate == {"records": 6, "requests": 3, "cached": 1, "resumed": 2, "input_tokens": 300, "output_tokens": 150,
                        "source": "tokenizer", "seconds": 0.0}
    judge = block["judge"]["openai:gpt-4o"]
    assert (judge["requests"], judge["input_tokens"], judge["output_tokens"], judge["retries"], judge["seconds"]) == (
        8, 4000, 1200, 1, 1.23)
    assert block["total"] == {"requests": 11, "cached": 1, "resumed": 2, "input_tokens": 4300, "output_tokens": 1350, "retries": 1}
    # No price given: no cost anywhere.
    assert "cost" not in judge and "prices" not in block


def test_cost_only_where_a_price_is_known():
    block = _tally().block({"openai:gpt-4o": Price(2.5, 10)})
    assert block["judge"]["openai:gpt-4o"]["cost"] == pytest.approx(4000 * 2.5e-6 + 1200 * 10e-6)
    assert "cost" not in block["generate"]["hf:embedded"]
    assert block["total"]["cost"] == pytest.approx(0.022) and block["total"]["unpriced"] == ["hf:embedded"]
    assert block["prices"] == {"openai:gpt-4o": {"input_per_1m": 2.5, "output_per_1m": 10}}
    line = usage_line(block)
    assert line == ("usage: generate 3 calls (1 cached, 2 resumed) 300 in / 150 out tokens · "
                    "judge 8 calls (0 cached) 4.0k in / 1.2k out tokens · cost $0.02 (no price for hf:embedded)")
    assert "cost" not in usage_line(_tally().block())


def test_number_formats():
    assert [format_tokens(n) for n in (0, 950, 5100, 12_400, 3_400_000)] == ["0", "950", "5.1k", "12k", "3.4M"]
    assert [format_cost(d) for d in (0, 0.4212, 12345.6, 0.0042, 0.00001)] == [
        "$0.00", "$0.42", "$12,345.60", "$0.0042", "< $0.0001"]


# ---- a verdict's usage: every call behind it --------------------------------------------------


def _pairs(n: int = 2) -> list[PairRequest]:
    return [PairRequest(id=f"i{k}", criterion="quality", instruction=f"Answer question {k}.", rubric="[Is it good?]",
                        response_a="short", response_b="a much longer answer here") for k in range(n)]


def test_verdict_usage_sums_reasks(scripted):
    # "flaky" gives a verdict only when re-asked: two asks per verdict, no probabilities.
    generator = registry.generators.create("scripted", "flaky")
    judge = registry.judges.create("prometheus", generator, params=GenParams(max_new_tokens=64), max_attempts=3)
    verdicts = judge.compare(_pairs())
    first, second = judge._request(_pairs()[0], 1), judge._request(_pairs()[0], 2)
    for verdict in verdicts:
        assert verdict.attempts == 2
        assert verdict.usage == {"requests": 2, "output_tokens": 20, "source": "estimated",
                                 "input_tokens": estimate_tokens(first.system + first.prompt)
                                 + estimate_tokens(second.system + second.prompt)}


def test_verdict_usage_counts_probability_probes_on_their_own_pair(scripted):
    generator = registry.generators.create("scripted", "longer", probs=True)
    judge = registry.judges.create("gpt-4o", generator, params=GenParams(max_new_tokens=64), max_attempts=2)
    pairs = _pairs(3)
    verdicts = judge.compare(pairs)
    # One written ask and one P(A) probe (its reply prefix carries the rationale) per verdict.
    for pair, verdict in zip(pairs, verdicts):
        assert verdict.prob_a is not None and verdict.usage["requests"] == 2
        probe = judge._probe(pair, "A has this, B has that.\nVerdict: B", 1)
        ask = judge._request(pair, 1)
        assert verdict.usage["input_tokens"] == estimate_tokens(ask.system + ask.prompt) + -(-(
            len(probe.system) + len(probe.prompt) + len(probe.response_prefix)) // 4)
        assert verdict.usage["output_tokens"] == 10 + 1
    # Verdict-only judging: one probe per verdict, nothing written.
    quick = registry.judges.create("prometheus", generator, params=GenParams(max_new_tokens=64), feedback=False)
    assert [v.usage["requests"] for v in quick.compare(pairs)] == [1, 1, 1]
