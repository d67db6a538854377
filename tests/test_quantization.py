"""Weight-only int8 / int4 on the CPU (inference.quantization): the packed layers multiply by the
weights they claim to hold, the quantized model stays close to its dequantized-weights reference,
and the engine serves it."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from inference import Engine, EngineConfig, SamplingParams, load_engine
from inference.errors import EngineError
from inference.quantization import (
    CPU_DEFAULT, INT4_GROUP_SIZE, Int4Linear, Int8Linear, dequantize_int4, dequantize_int8, int4_codes, int8_codes,
    quantize_weights, resolve_quantize,
)

KINDS = ["int8", "int4"]


def dequantized_weight(kind, weight):
    if kind == "int8":
        return dequantize_int8(*int8_codes(weight))
    return dequantize_int4(*int4_codes(weight, INT4_GROUP_SIZE))


def packed(kind, linear):
    return Int8Linear(linear) if kind == "int8" else Int4Linear(linear)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("rows", [1, 7, 256])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_packed_layer_matches_f_linear_on_its_dequantized_weights(kind, rows, dtype):
    torch.manual_seed(rows)
    linear = nn.Linear(128, 48).to(dtype)  # as in a model: the bias in the activations' dtype
    x = torch.randn(2, rows, 128, dtype=dtype)
    out = packed(kind, linear)(x)
    assert out.shape == (2, rows, 48) and out.dtype == dtype
    reference = F.linear(x.float(), dequantized_weight(kind, linear.weight), linear.bias.float())
    # The kernels take bf16 inputs and give bf16 outputs: each of those roundings is within 2**-8 of
    # the value, so the error stays within a few bf16 steps of the output's magnitude.
    assert (out.float() - reference).abs().max() <= 4 * 2**-8 * reference.abs().max()


@pytest.mark.parametrize("kind, bound", [("int8", 0.01), ("int4", 0.12)])
def test_the_dequantized_weights_are_close_to_the_originals(kind, bound):
    torch.manual_seed(0)
    weight = torch.randn(64, 256) * torch.rand(64, 1)  # rows of different scales
    error = (dequantized_weight(kind, weight) - weight).norm() / weight.norm()
    # int8: half a step of 1/127 of each row's largest value; int4: of 1/15 of each group's range
    assert 0 < error < bound


def test_a_layer_the_kernels_cannot_take_stays_as_it_is():
    model = nn.Sequential(nn.Linear(40, 32), nn.Linear(32, 24))
    assert quantize_weights(model, "int8") == 1
    assert isinstance(model[0], nn.Linear) and isinstance(model[1], Int8Linear)
    model = nn.Sequential(nn.Linear(64, 32), nn.Linear(32, 24))  # int4: 24 outputs are not a multiple of 16
    assert quantize_weights(model, "int4") == 1
    assert isinstance(model[0], Int4Linear) and isinstance(model[1], nn.Linear)


@pytest.fixture(scope="module")
def fp32_model(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()


def quantized_and_reference(fp32_model, kind):
    """(the model with packed layers, the same model with each Linear's weights replaced by their
    dequantized values, in fp32)."""
    reference = copy.deepcopy(fp32_model)
    for module in reference.modules():
        if isinstance(module, nn.Linear):  # the output layer is int8 in either kind
            layer_kind = "int8" if module is reference.lm_head else kind
            module.weight = nn.Parameter(dequantized_weight(layer_kind, module.weight))
    quantized = copy.deepcopy(fp32_model)
    assert quantize_weights(quantized, kind) == sum(isinstance(m, nn.Linear) for m in fp32_model.modules())
    return quantized, reference


@pytest.mark.parametrize("kind", KINDS)
@torch.inference_mode()
def test_the_quantized_model_stays_within_a_bound_of_its_dequantized_reference(fp32_model, kind):
    quantized, reference = quantized_and_reference(fp32_model, kind)
    assert isinstance(quantized.model.layers[0].mlp.down_proj, Int8Linear if kind == "int8" else Int4Linear)
    assert isinstance(quantized.lm_head, Int8Linear)
    # the output layer is tied to the input embedding: that embedding must keep the original weights
    assert torch.equal(quantized.model.embed_tokens.weight, fp32_model.model.embed_tokens.weight)
    ids = torch.randint(0, fp32_model.config.vocab_size, (1, 48), generator=torch.Generator().manual_seed(1))
    logits, expected, original = (m(input_ids=ids).logits.float() for m in (quantized, reference, fp32_model))
    # What is left is bf16 rounding inside the kernels: far smaller than the quantization itself.
    rounding, quantization = (logits - expected).abs().max(), (expected - original).abs().max()
    assert rounding <= 0.02 * expected.abs().max()
    if kind == "int4":
        assert rounding < quantization / 4


@pytest.mark.parametrize("kind", KINDS)
def test_the_engine_decodes_a_quantized_model_as_generate_does(fp32_model, tiny_engine, kind):
    if tiny_engine.device.type != "cpu":
        pytest.skip("integer weights run on the CPU only")
    quantized, _ = quantized_and_reference(fp32_model, kind)
    engine = Engine(quantized, tiny_engine.tokenizer, EngineConfig(max_batch_size=4), name=f"tiny ({kind})")
    try:
        messages = [{"role": "user", "content": "Count to ten, please."}]
        params = SamplingParams(temperature=0, max_new_tokens=24)
        streams = [engine.stream_reply(messages, params) for _ in range(3)]  # batched decode as well
        texts = [stream.text() for stream in streams]
        prompt = torch.tensor([streams[0].prompt_ids])
        with torch.inference_mode():
            generated = quantized.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False,
                                           max_new_tokens=len(streams[0].token_ids), eos_token_id=None)
        assert streams[0].token_ids == generated[0, prompt.shape[1]:].tolist()
        assert len(streams[0].token_ids) > 0 and texts == [texts[0]] * 3
        assert all(stream.token_ids == streams[0].token_ids for stream in streams)
    finally:
        engine.loop.close()


def test_load_engine_quantizes_on_request(tiny_model_dir):
    engine = load_engine(EngineConfig(model=str(tiny_model_dir), device="cpu", dtype="float32", quantize="int4"))
    try:
        assert engine.precision == "int4" and not engine.name.endswith(")") and isinstance(engine.model.model.layers[1].self_attn.k_proj, Int4Linear)
        assert engine.reply("Hello", SamplingParams(temperature=0, max_new_tokens=4)) is not None
    finally:
        engine.loop.close()


def test_auto_means_the_gated_default_on_a_cpu_and_none_on_a_gpu():
    assert resolve_quantize("auto", torch.device("cpu")) == CPU_DEFAULT
    assert resolve_quantize("auto", torch.device("cuda:0")) == "none"
    assert resolve_quantize("none", torch.device("cuda:0")) == "none"
    assert resolve_quantize("INT4 ", torch.device("cpu")) == "int4"


@pytest.mark.parametrize("kind", KINDS)
def test_integer_weights_on_a_gpu_are_refused_with_a_clear_message(kind):
    with pytest.raises(EngineError, match=f"{kind} quantization runs on the CPU only.*'none' or 'auto'"):
        resolve_quantize(kind, torch.device("cuda:0"))


def test_an_unknown_choice_is_refused_naming_the_choices():
    with pytest.raises(EngineError, match="quantize must be one of auto, none, int8, int4; not 'int3'"):
        resolve_quantize("int3", torch.device("cpu"))
