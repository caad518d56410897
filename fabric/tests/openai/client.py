"""The official openai client against a Nexus node's OpenAI-compatible gateway
(fabric/tests/gateway.rs). Usage: client.py <gateway base URL, e.g. http://127.0.0.1:8080/v1>.

Each check prints "ok: <name>"; the first failure raises (exit status 1).
"""

import sys

import openai

TOKENS = 25


def expected(n):
    return "".join("tok%d " % i for i in range(n))


def check(name, condition, detail=""):
    if not condition:
        raise AssertionError("%s: %s" % (name, detail))
    print("ok: %s" % name, flush=True)


def main():
    client = openai.OpenAI(base_url=sys.argv[1], api_key="unused-by-the-gateway", max_retries=0,
                           timeout=60)

    # Streaming chat: every token, in order, as chunks; then the finish reason and usage.
    stream = client.chat.completions.create(
        model="tiny-chat",
        messages=[{"role": "user", "content": str(TOKENS)}],
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, finish, usage, roles = [], None, None, []
    for chunk in stream:
        check_object = chunk.object == "chat.completion.chunk"
        if not check_object:
            raise AssertionError("chunk object %r" % chunk.object)
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.role:
                roles.append(choice.delta.role)
            if choice.delta.content:
                pieces.append(choice.delta.content)
            if choice.finish_reason:
                finish = choice.finish_reason
    check("stream: all tokens in order", pieces == ["tok%d " % i for i in range(TOKENS)], pieces)
    check("stream: assistant role first", roles == ["assistant"], roles)
    check("stream: finish reason", finish == "stop", finish)
    check("stream: usage", usage is not None and usage.completion_tokens == TOKENS
          and usage.prompt_tokens == 7, usage)

    # The same through the nexus member, with an explicit intent.
    stream = client.chat.completions.create(
        model="tiny-chat",
        messages=[{"role": "user", "content": "3"}],
        stream=True,
        extra_body={"nexus": {"task": "llm.chat", "model_family": "tiny", "k": 2}},
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    check("stream with a nexus intent", text == expected(3), text)

    # Non-streaming chat: one chat.completion.
    completion = client.chat.completions.create(
        model="tiny-chat",
        messages=[{"role": "user", "content": "12"}],
    )
    check("chat: one completion", completion.object == "chat.completion", completion)
    check("chat: content", completion.choices[0].message.content == expected(12),
          completion.choices[0].message.content)
    check("chat: role", completion.choices[0].message.role == "assistant")
    check("chat: usage", completion.usage.completion_tokens == 12
          and completion.usage.total_tokens == 19, completion.usage)

    # Embeddings: 1024 floats per input (the client asks for base64 and decodes it).
    embeddings = client.embeddings.create(model="tiny-embed", input=["hello", "fabric"])
    check("embeddings: two vectors", len(embeddings.data) == 2, embeddings)
    check("embeddings: 1024 floats",
          all(len(e.embedding) == 1024 and all(isinstance(x, float) for x in e.embedding)
              for e in embeddings.data))
    plain = client.embeddings.create(model="tiny-embed", input="hello", encoding_format="float")
    check("embeddings: base64 and float agree",
          all(abs(a - b) < 1e-6 for a, b in zip(plain.data[0].embedding, embeddings.data[0].embedding)))

    # Bad requests: typed 400s.
    try:
        client.chat.completions.create(model="tiny-chat", messages=[])
        raise AssertionError("an empty messages array was accepted")
    except openai.BadRequestError as e:
        check("bad request: empty messages", e.status_code == 400 and e.code == "invalid_value"
              and e.param == "messages", (e.status_code, e.body))
    try:
        client.chat.completions.create(model="tiny-chat", messages=[{"role": "user", "content": "x"}],
                                       extra_body={"nexus": {"k": 0}})
        raise AssertionError("an invalid intent was accepted")
    except openai.BadRequestError as e:
        check("bad request: invalid intent", e.code == "invalid_intent" and e.param == "nexus.k",
              e.body)

    # Unknown model: the upstream's 404, typed, streaming or not.
    for stream in (False, True):
        try:
            client.chat.completions.create(model="no-such-model",
                                           messages=[{"role": "user", "content": "1"}], stream=stream)
            raise AssertionError("an unknown model was accepted")
        except openai.NotFoundError as e:
            check("unknown model (stream=%s)" % stream,
                  e.status_code == 404 and e.code == "model_not_found", e.body)
    try:
        client.embeddings.create(model="no-such-model", input="x")
        raise AssertionError("an unknown embedding model was accepted")
    except openai.NotFoundError as e:
        check("unknown embedding model", e.code == "model_not_found", e.body)

    # No endpoint for the intent: 503.
    try:
        client.chat.completions.create(model="tiny-chat", messages=[{"role": "user", "content": "1"}],
                                       extra_body={"nexus": {"task": "audio.transcribe"}})
        raise AssertionError("an intent nothing serves was answered")
    except openai.InternalServerError as e:
        check("no endpoint", e.status_code == 503 and e.code == "no_endpoint", e.body)

    # Models: the services' model families.
    models = [m.id for m in client.models.list()]
    check("models", "tiny" in models, models)

    print("all checks passed", flush=True)


if __name__ == "__main__":
    main()
