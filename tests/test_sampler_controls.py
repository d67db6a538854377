"""The serving engines' sampling controls, per row of one batch: top-k, min-p, logit_bias, bans
(min_tokens), repetition/presence/frequency penalties with their counts on the device, logprobs;
and stop strings matched across token boundaries. The sampler's parts without a model, then the
engine's with the tiny one."""
import math

import pytest
import torch

from inference import InvalidParameters, SamplingParams
from inference.sampler import Row, TokenCounts, sample_step
from inference.stop_strings import StopStrings
from tests.engine_support import user


def draws(logits, row, times=300):
    return {sample_step(logits, [row]).tokens[0] for _ in range(times)}


def test_top_k_keeps_the_k_most_likely_tokens_of_its_row_only():
    logits = torch.tensor([[1.0, 0.9, 0.8, 0.7]] * 2)
    torch.manual_seed(0)
    seen = [set(), set()]
    rows = [Row(SamplingParams(temperature=1.0, top_p=1.0, top_k=2)), Row(SamplingParams(temperature=1.0, top_p=1.0))]
    for _ in range(300):
        for index, token in enumerate(sample_step(logits, rows).tokens):
            seen[index].add(token)
    assert seen == [{0, 1}, {0, 1, 2, 3}]


def test_min_p_drops_tokens_below_its_share_of_the_best():
    logits = torch.tensor([0.5, 0.3, 0.15, 0.05]).log()[None]
    torch.manual_seed(0)
    assert draws(logits, Row(SamplingParams(temperature=1.0, top_p=1.0, min_p=0.2))) == {0, 1, 2}
    assert draws(logits, Row(SamplingParams(temperature=1.0, top_p=1.0, min_p=0.5))) == {0, 1}


def test_logit_bias_and_bans_move_a_greedy_row():
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0]] * 4)
    rows = [Row(SamplingParams(temperature=0)),
            Row(SamplingParams(temperature=0, logit_bias={3: 100})),
            Row(SamplingParams(temperature=0, logit_bias={0: -100})),
            Row(SamplingParams(temperature=0), banned=(0, 1))]
    assert sample_step(logits, rows).tokens == [0, 3, 1, 2]


def test_penalties_use_the_rows_own_counts_kept_on_the_device():
    counts = TokenCounts(slots=4, vocab_size=3, device=torch.device("cpu"))
    for slot in range(4):
        counts.start(slot, prompt_ids=[0] if slot == 0 else [])
    counts.add(torch.tensor([1, 1, 2]), torch.tensor([0, 0, 0]))  # slots 1 and 2 generated token 0
    logits = torch.tensor([[2.0, 1.9, -3.0]] * 4)
    rows = [Row(SamplingParams(temperature=0, repetition_penalty=1.1), slot=0),  # 2.0 / 1.1 < 1.9
            Row(SamplingParams(temperature=0, frequency_penalty=0.1), slot=1),  # 2.0 - 2 * 0.1 < 1.9
            Row(SamplingParams(temperature=0, presence_penalty=0.05), slot=2),  # 2.0 - 0.05 > 1.9
            Row(SamplingParams(temperature=0), slot=3)]
    assert sample_step(logits, rows, counts).tokens == [1, 1, 0, 0]
    # the drawn tokens of the penalized rows were counted in place; the plain row keeps no counts
    assert counts.generated[:, :2].tolist() == [[0, 1], [2, 1], [2, 0], [0, 0]]
    # a new reply in a slot starts from nothing
    counts.start(1, prompt_ids=[])
    assert counts.generated[1].tolist() == [0, 0, 0]


def test_a_repetition_penalty_pushes_negative_logits_further_down():
    counts = TokenCounts(slots=1, vocab_size=2, device=torch.device("cpu"))
    counts.start(0, prompt_ids=[0])
    logits = torch.tensor([[-1.0, -1.05]])
    assert sample_step(logits, [Row(SamplingParams(temperature=0), slot=0)], counts).tokens == [0]
    penalized = Row(SamplingParams(temperature=0, repetition_penalty=1.1), slot=0)
    assert sample_step(logits, [penalized], counts).tokens == [1]  # -1.1 < -1.05


def test_a_row_draws_the_same_in_a_batch_with_every_feature_as_alone():
    torch.manual_seed(1)
    logits = torch.randn(1, 64)
    seeded = SamplingParams(temperature=0.9, top_p=0.9, top_k=20, min_p=0.02, seed=5)

    def run(batch_of):
        generator = torch.Generator().manual_seed(5)
        counts = TokenCounts(slots=4, vocab_size=64, device=torch.device("cpu"))
        for slot in range(4):
            counts.start(slot, [1, 2, 3])
        tokens = []
        for step in range(20):
            others = torch.randn(3, 64)
            rows = [Row(seeded, generator, slot=0)]
            batch = logits
            if batch_of:
                rows += [Row(SamplingParams(temperature=0.7, frequency_penalty=1.0, logit_bias={7: 5.0}), slot=1),
                         Row(SamplingParams(temperature=0, repetition_penalty=1.3), slot=2),
                         Row(SamplingParams(temperature=1.2, presence_penalty=0.5, top_k=3), slot=3, banned=(0,))]
                batch = torch.cat([logits, others])
            tokens.append(sample_step(batch, rows, counts).tokens[0])
        return tokens

    alone = run(batch_of=False)
    assert run(batch_of=True) == alone and len(set(alone)) > 3


def test_logprobs_are_the_models_own_for_the_drawn_token_and_the_most_likely():
    logits = torch.tensor([[2.0, 1.0, 0.5, -1.0], [0.0, 0.0, 0.0, 0.0]])
    rows = [Row(SamplingParams(temperature=0, logprobs=True, top_logprobs=2, logit_bias={2: 10})),
            Row(SamplingParams(temperature=0))]
    sampled = sample_step(logits, rows)
    assert sampled.tokens[0] == 2 and sampled.logprobs[1] is None
    chosen, top = sampled.logprobs[0]
    expected = torch.log_softmax(logits[0], dim=-1)
    assert math.isclose(chosen, expected[2].item(), rel_tol=1e-6)
    assert [token for token, _ in top] == [0, 1]
    assert math.isclose(top[0][1], expected[0].item(), rel_tol=1e-6)


def test_sampling_controls_are_validated():
    for bad in ({"top_k": -1}, {"min_p": 1.5}, {"repetition_penalty": 0}, {"presence_penalty": 3},
                {"frequency_penalty": -2.5}, {"logit_bias": {"x": 1}}, {"logit_bias": {"1": 101}},
                {"stop": ["a", "b", "c", "d", "e"]}, {"stop": [""]}, {"stop_token_ids": [-1]},
                {"min_tokens": 600, "max_new_tokens": 500}, {"top_logprobs": 2}, {"logprobs": "yes"}):
        with pytest.raises(InvalidParameters):
            SamplingParams.from_dict(bad)
    params = SamplingParams.from_dict({"stop": "END", "logit_bias": {"42": -100}, "top_k": 40})
    assert params.stop == ("END",) and params.logit_bias == {42: -100}
    assert SamplingParams.from_dict(params.as_dict()) == params  # stored as JSON, read back the same


def test_stop_strings_match_across_pieces_and_nothing_past_them_is_released():
    stops = StopStrings(["o w", "xyz"])
    released = [stops.feed(piece) for piece in ["Hel", "lo", " wor", "ld"]]
    assert "".join(released) == "Hell" and stops.stopped
    assert released == ["Hel", "l", "", ""]
    held = StopStrings(["abc"])
    assert held.feed("xab") == "x"  # "ab" might begin "abc"
    assert held.feed("d") == "abd"
    assert held.feed("ab") == "" and held.flush() == "ab"  # the reply ended without the stop


@pytest.fixture
def seeded_text(tiny_engine):
    """A seeded reply of the tiny model, with the pieces it was streamed in."""
    params = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=40, seed=3)
    stream = tiny_engine.stream_reply(user("tell me a story"), params)
    pieces = list(stream)
    return params, pieces, stream


def test_a_stop_string_split_across_tokens_ends_the_reply_before_it(tiny_engine, seeded_text):
    params, pieces, _ = seeded_text
    text = "".join(pieces)
    boundary = next(i for i in range(1, len(pieces)) if len(pieces[i - 1]) >= 2 and len(pieces[i]) >= 2
                    and text.index(pieces[i - 1][-2:] + pieces[i][:2]) == len("".join(pieces[:i])) - 2)
    stop = pieces[boundary - 1][-2:] + pieces[boundary][:2]
    stream = tiny_engine.stream_reply(user("tell me a story"), SamplingParams(**{**params.as_dict(), "stop": [stop]}))
    assert stream.text() == text[: text.index(stop)]
    assert stream.finish_reason == "stop"
    # its sampled tokens run past its text (into the stop string): the next prompt must not use them for it
    assert tiny_engine.loop.sampled_replies.get(text[: text.index(stop)]) is None
    assert tiny_engine.loop.sampled_replies.get(text) is not None  # a reply that ended otherwise is remembered


def test_stop_token_ids_and_min_tokens(tiny_engine, seeded_text):
    params, _, stream = seeded_text
    ids = stream.token_ids
    at = next(i for i in range(2, len(ids)) if ids[i] not in ids[:i])
    stopped = tiny_engine.stream_reply(user("tell me a story"),
                                       SamplingParams(**{**params.as_dict(), "stop_token_ids": [ids[at]]}))
    stopped.text()
    assert (stopped.token_ids, stopped.finish_reason) == (ids[:at], "stop")
    # the end-of-turn token pushed to the top: at once, unless min_tokens holds it back
    eos = tiny_engine.tokenizer.convert_tokens_to_ids("<|im_end|>")
    ending = {"temperature": 0, "max_new_tokens": 20, "logit_bias": {eos: 100}}
    at_once = tiny_engine.stream_reply(user("hi"), SamplingParams(**ending))
    at_once.text()
    held = tiny_engine.stream_reply(user("hi"), SamplingParams(**ending, min_tokens=5))
    held.text()
    assert (at_once.completion_tokens, at_once.finish_reason) == (0, "stop")
    assert (held.completion_tokens, held.finish_reason) == (5, "stop")


def test_penalties_and_logprobs_through_the_engine(tiny_engine):
    plain = tiny_engine.stream_reply(user("hi"), SamplingParams(temperature=0, max_new_tokens=24, logprobs=True,
                                                                top_logprobs=3))
    plain.text()
    penalized = tiny_engine.stream_reply(user("hi"), SamplingParams(temperature=0, max_new_tokens=24,
                                                                    frequency_penalty=2.0))
    penalized.text()
    assert len(set(penalized.token_ids)) > len(set(plain.token_ids))
    assert len(plain.logprobs) == plain.completion_tokens
    assert all(chosen <= 0 and len(top) == 3 and top[0][1] >= chosen for chosen, top in plain.logprobs)
    with pytest.raises(InvalidParameters, match="vocabulary"):
        tiny_engine.stream_reply(user("hi"), SamplingParams(stop_token_ids=(10**9,)))


def test_the_models_own_sampling_applies_where_a_request_sets_none(tiny_engine):
    from transformers import GenerationConfig

    from inference.packaged_model import RECOMMENDED_SAMPLING
    from inference.sampling import model_defaults, reply_request

    recommended = model_defaults(GenerationConfig(**RECOMMENDED_SAMPLING))
    assert recommended == {"temperature": 0.7, "top_p": 0.8, "top_k": 20, "repetition_penalty": 1.1}
    assert model_defaults(GenerationConfig(do_sample=False, temperature=0.9)) == {"temperature": 0.0}
    assert model_defaults(GenerationConfig(temperature=9.0)) == {}  # out of bounds: not the model's to set
    _, params = reply_request("hi", {"temperature": 0.2}, 4096, recommended)
    assert (params.temperature, params.top_k, params.repetition_penalty) == (0.2, 20, 1.1)
    _, params = reply_request("hi", None, 4096, recommended)
    assert (params.temperature, params.top_p) == (0.7, 0.8)
    # an engine takes its model's generation_config: the tiny model has none, so the plain defaults
    assert tiny_engine.sampling_defaults == {}


def test_the_packaged_model_folder_carries_its_published_sampling(default_model_dir):
    import json

    from inference.packaged_model import RECOMMENDED_SAMPLING

    config = json.loads((default_model_dir / "generation_config.json").read_text())
    assert {name: config[name] for name in RECOMMENDED_SAMPLING} == RECOMMENDED_SAMPLING


def test_top_p_applies_among_the_top_k_on_both_ways_of_drawing():
    # [.35, .3, .2, .15]: top_k 2 leaves [.54, .46]; top_p 0.5 of that is the first token alone (without
    # renormalizing it would keep two). The CPU draws among the most likely tokens, a GPU over the whole
    # vocabulary (here called directly): both keep the same tokens.
    from inference.sampler import _Cuts, _draw

    logits = torch.tensor([[0.35, 0.3, 0.2, 0.15]]).log()
    params = SamplingParams(temperature=1.0, top_k=2, top_p=0.5)
    torch.manual_seed(0)
    assert draws(logits, Row(params)) == {0}
    whole = {int(_draw(logits, _Cuts([params], logits.device), torch.rand(1))[0][0]) for _ in range(200)}
    assert whole == {0}
    wider = SamplingParams(temperature=1.0, top_k=3, top_p=0.8, min_p=0.6)  # [.41, .35, .24]: min-p drops .24
    assert draws(logits, Row(wider)) == {0, 1}
    assert {int(_draw(logits, _Cuts([wider], logits.device), torch.rand(1))[0][0]) for _ in range(200)} == {0, 1}
