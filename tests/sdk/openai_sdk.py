"""OpenAI's Python SDK against maas, unchanged but for base_url and api_key. Run by
scripts/openai-sdk; prints one line per check and 'N passed, M failed' at the end."""

import json
import os
import time
import urllib.request

import openai

URL = os.environ["MAAS_URL"]
MODEL = "smollm2-135m-instruct"
EMBEDDER = "all-minilm-l6-v2"


def api(path, body, token=None):
    req = urllib.request.Request(URL + path, json.dumps(body).encode(), {"content-type": "application/json"})
    if token:
        req.add_header("authorization", "Bearer " + token)
    return json.load(urllib.request.urlopen(req))["data"]


def api_key():
    """A platform API key of a freshly signed-up user, as the SDK's api_key."""
    name = "sdk" + str(int(time.time() * 1000))
    password = "Sturdy-Passw0rd!"
    api("/api/v1/auth/register", {"username": name, "email": name + "@example.com", "password": password})
    token = api("/api/v1/auth/login", {"email": name + "@example.com", "password": password})["access_token"]
    return api("/api/v1/users/me/api-keys", {"name": "sdk", "permissions": ["model:read", "inference:create"]}, token)["key"]


client = openai.OpenAI(base_url=URL + "/v1", api_key=api_key(), max_retries=0)
checks = []


def check(name):
    def wrap(f):
        checks.append((name, f))
        return f
    return wrap


def wait_for_model():
    for _ in range(300):
        ids = {m.id for m in client.models.list()}
        if MODEL in ids and EMBEDDER in ids:
            return
        time.sleep(0.2)
    raise AssertionError("the model never became ready")


@check("models.list and models.retrieve")
def _():
    ids = [m.id for m in client.models.list()]
    assert MODEL in ids, ids
    assert client.models.retrieve(MODEL).id == MODEL


QUESTION = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]


@check("chat.completions.create")
def _():
    r = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=32, temperature=0)
    assert r.object == "chat.completion"
    assert "Paris" in r.choices[0].message.content, r
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


@check("chat.completions.create(stream=True) with include_usage")
def _():
    whole = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=32, temperature=0)
    chunks = list(client.chat.completions.create(
        model=MODEL, messages=QUESTION, max_tokens=32, temperature=0,
        stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content, (text, whole.choices[0].message.content)
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"


@check("chat.completions.create with seed, n and logprobs")
def _():
    args = dict(model=MODEL, messages=[{"role": "user", "content": "Tell me a story."}],
                max_tokens=8, temperature=1.0, seed=7, n=2, logprobs=True, top_logprobs=2)
    a = client.chat.completions.create(**args)
    b = client.chat.completions.create(**args)
    assert [c.message.content for c in a.choices] == [c.message.content for c in b.choices]
    assert len(a.choices) == 2 and len(a.choices[0].logprobs.content[0].top_logprobs) == 2


@check("completions.create, whole and streamed")
def _():
    r = client.completions.create(model=MODEL, prompt="The capital of Germany is", max_tokens=4, temperature=0)
    assert "Berlin" in r.choices[0].text, r
    s = "".join(c.choices[0].text for c in client.completions.create(
        model=MODEL, prompt="The capital of Germany is", max_tokens=4, temperature=0, stream=True) if c.choices)
    assert s == r.choices[0].text, (s, r.choices[0].text)


@check("embeddings: base64 by default, floats on request, the same vectors")
def _():
    texts = ["A man plays the guitar.", "Someone is playing music on a guitar.", "The stock market fell today."]
    # The SDK asks for base64 unless told otherwise and decodes it itself.
    r = client.embeddings.create(model=EMBEDDER, input=texts)
    assert [d.index for d in r.data] == [0, 1, 2] and len(r.data[0].embedding) == 384, r
    f = client.embeddings.create(model=EMBEDDER, input=texts, encoding_format="float")
    for a, b in zip(r.data, f.data):
        assert max(abs(x - y) for x, y in zip(a.embedding, b.embedding)) < 1e-6
    e = [d.embedding for d in f.data]
    cos = lambda a, b: sum(x * y for x, y in zip(a, b))
    assert cos(e[0], e[1]) > cos(e[0], e[2]) + 0.3, (cos(e[0], e[1]), cos(e[0], e[2]))
    assert r.usage.prompt_tokens == r.usage.total_tokens > 0, r.usage
    one = client.embeddings.create(model=EMBEDDER, input="hello")
    assert len(one.data) == 1


def expect(exc, f):
    try:
        f()
    except exc as e:
        return e
    raise AssertionError(f"expected {exc.__name__}")


@check("errors: unknown model, bad input, context, credentials")
def _():
    e = expect(openai.NotFoundError, lambda: client.chat.completions.create(model="gpt-17", messages=QUESTION))
    assert e.code == "model_not_found", e
    e = expect(openai.BadRequestError, lambda: client.chat.completions.create(model=MODEL, messages=[]))
    assert e.param == "messages", e
    e = expect(openai.BadRequestError, lambda: client.chat.completions.create(
        model=MODEL, messages=[{"role": "wizard", "content": "hi"}]))
    assert e.param == "messages[0].role", e
    e = expect(openai.BadRequestError, lambda: client.chat.completions.create(model=MODEL, messages=QUESTION, temperature=-1))
    assert e.param == "temperature", e
    e = expect(openai.BadRequestError, lambda: client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "word " * 9000}]))
    assert e.code == "context_length_exceeded" and "8192" in e.message, e
    e = expect(openai.BadRequestError, lambda: client.embeddings.create(model=EMBEDDER, input=[]))
    assert e.param == "input", e
    e = expect(openai.BadRequestError, lambda: client.embeddings.create(model=MODEL, input="hi"))
    assert e.param == "model", e
    bad = openai.OpenAI(base_url=URL + "/v1", api_key="mk_nope.nope", max_retries=0)
    expect(openai.AuthenticationError, lambda: bad.models.list())


wait_for_model()
passed = failed = 0
for name, f in checks:
    try:
        f()
        passed += 1
        print(f"ok   {name}")
    except Exception as e:  # noqa: BLE001 - every failure is reported, then counted
        failed += 1
        print(f"FAIL {name}: {e!r}")
print(f"{passed} passed, {failed} failed")
raise SystemExit(1 if failed else 0)
