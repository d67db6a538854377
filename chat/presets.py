"""Presets and each conversation's settings.

A preset is a named system prompt plus sampling settings. Built-in presets (BUILTIN, ids are
strings) are the same for everyone and read-only; a user's own (chat.models.Preset, integer ids)
are kept on the server per owner (a signed-in user, or a guest's identity), so they follow a user
who signs in on another browser, and are scoped like conversations: nobody sees another's.

A conversation's settings (Conversation.settings) are what the page applies to its turns: the
preset picked, if any, and the values set ({preset?, system?, and any of SAMPLING}); a value left out follows the server's default. The turn's own `params` stay
what the reply is generated with (and are stored on the reply); the settings are what the page
shows and sends again next time.
"""
from django.conf import settings
from django.db import transaction

from inference.sampling import InvalidParameters, SamplingParams

from .models import MAX_ID, Preset
from .turns import ProtocolError, get_owned

MAX_NAME_CHARS = 80
# Per owner, small enough that the `presets` frame (sent to every socket of the user after each save)
# stays small: at most MAX_PRESETS x MAX_PRESET_SYSTEM_CHARS characters of system prompts.
MAX_PRESETS = 20
MAX_PRESET_SYSTEM_CHARS = 4000
SAMPLING = ("temperature", "top_p", "max_new_tokens", "top_k", "min_p", "repetition_penalty", "stop")

BUILTIN = [
    {"id": "concise", "name": "Concise", "temperature": 0.3,
     "system": "Answer as briefly as the question allows: one or two sentences, or a short list. "
               "No preamble, no restating the question, no closing offers of more help."},
    {"id": "code-reviewer", "name": "Code reviewer", "temperature": 0.2,
     "system": "You are a careful senior code reviewer. For the code you are given, list bugs, security "
               "problems, unclear names and missing tests, most serious first, each with a concrete fix. "
               "Be direct and specific; do not rewrite the whole code."},
    {"id": "explain-simply", "name": "Explain simply",
     "system": "Explain like a patient teacher to a beginner: plain words, one short example, and define "
               "any technical term the first time you use it."},
    {"id": "deterministic", "name": "Deterministic", "temperature": 0.0,
     "system": ""},
]
BUILTIN_IDS = {preset["id"] for preset in BUILTIN}


def as_item(preset):
    """A preset as the protocol's `presets` frame lists it: only the values it sets."""
    if isinstance(preset, dict):  # built-in
        item = {"id": preset["id"], "name": preset["name"], "system": preset.get("system", ""), "builtin": True}
        item.update({key: preset[key] for key in SAMPLING if preset.get(key) is not None})
        return item
    item = {"id": preset.pk, "name": preset.name, "system": preset.system, "builtin": False}
    item.update({key: getattr(preset, key) for key in SAMPLING if getattr(preset, key) is not None})
    return item


def builtin_items():
    return [as_item(p) for p in BUILTIN]


def list_presets(owner):
    """The built-in presets, then the owner's own by name."""
    return builtin_items() + [as_item(p) for p in Preset.objects.owned_by(owner)]


def clean_sampling(raw, conversation_id=None):
    """The sampling values given in `raw` (each optional), checked against the server's bounds."""
    values = {key: raw[key] for key in SAMPLING if raw.get(key) is not None}
    try:
        SamplingParams.from_dict({"max_new_tokens": 1, **values}, settings.CHAT_MAX_NEW_TOKENS_LIMIT)
    except (InvalidParameters, TypeError) as exc:
        raise ProtocolError("bad_params", str(exc), conversation_id) from None
    return values


def _system(raw, conversation_id=None, limit=None):
    system = raw.get("system")
    if system is None:
        return ""
    limit = limit or settings.CHAT_MAX_MESSAGE_CHARS
    if not isinstance(system, str):
        raise ProtocolError("bad_field", "'system' must be a string", conversation_id)
    if len(system) > limit:
        raise ProtocolError("too_large", f"the system prompt has {len(system)} characters; the limit is {limit}",
                            conversation_id)
    return system


def clean_settings(raw, conversation_id=None):
    """A conversation's `settings` from a frame: {preset?, system?, and any of SAMPLING}, only what is
    given; raises ProtocolError for anything else."""
    if not isinstance(raw, dict):
        raise ProtocolError("bad_field", "'settings' must be an object", conversation_id)
    unknown = set(raw) - {"preset", "system", *SAMPLING}
    if unknown:
        raise ProtocolError("bad_field", f"unknown setting(s): {', '.join(sorted(unknown))[:200]}", conversation_id)
    clean = clean_sampling(raw, conversation_id)
    system = _system(raw, conversation_id)
    if system.strip():
        clean["system"] = system
    preset = raw.get("preset")
    if preset is not None:
        if isinstance(preset, bool) or not isinstance(preset, (int, str)) or (
                isinstance(preset, str) and preset not in BUILTIN_IDS) or (isinstance(preset, int) and preset < 1):
            raise ProtocolError("bad_field", "'settings.preset' must be a preset id or null", conversation_id)
        clean["preset"] = preset  # a preset deleted since is shown as custom settings by the page
    return clean


def set_conversation_settings(owner, conversation_id, values):
    conversation = get_owned(owner, conversation_id)
    conversation.settings = values
    conversation.save(update_fields=["settings"])  # not `updated`: a settings change is no activity


@transaction.atomic
def save_preset(owner, raw):
    """Create (no `id`) or update one of the owner's presets from a frame's `preset` object."""
    if not isinstance(raw, dict):
        raise ProtocolError("bad_field", "'preset' must be an object")
    unknown = set(raw) - {"id", "name", "system", "builtin", *SAMPLING}
    if unknown:
        raise ProtocolError("bad_field", f"unknown preset field(s): {', '.join(sorted(unknown))[:200]}")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip() or len(name.strip()) > MAX_NAME_CHARS:
        raise ProtocolError("bad_field", f"a preset's 'name' must be 1 to {MAX_NAME_CHARS} characters")
    values = {"name": name.strip(), "system": _system(raw, limit=MAX_PRESET_SYSTEM_CHARS), **dict.fromkeys(SAMPLING), **clean_sampling(raw)}
    preset_id = raw.get("id")
    if preset_id is None:
        if Preset.objects.owned_by(owner).count() >= MAX_PRESETS:
            raise ProtocolError("too_large", f"you have {MAX_PRESETS} presets, the most allowed; delete some first")
        preset = Preset.objects.create(**owner.fields(), **values)
    else:
        preset = _owned(owner, preset_id)
        for key, value in values.items():
            setattr(preset, key, value)
        preset.save()
    return as_item(preset)


def delete_preset(owner, preset_id):
    _owned(owner, preset_id).delete()


def _owned(owner, preset_id):
    if preset_id in BUILTIN_IDS:
        raise ProtocolError("bad_field", "built-in presets cannot be changed; save a copy under a new name")
    if isinstance(preset_id, bool) or not isinstance(preset_id, int) or not 1 <= preset_id <= MAX_ID:
        raise ProtocolError("bad_field", "'id' must be a preset id")
    preset = Preset.objects.owned_by(owner).filter(pk=preset_id).first()
    if preset is None:
        raise ProtocolError("not_found", "no such preset")
    return preset
