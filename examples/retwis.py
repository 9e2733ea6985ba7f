"""Retwis on Squall: users, follows, posts, replies and timelines as
registered functions, read and written at the `causal` consistency level.

    .venv/bin/python examples/retwis.py     # against a cluster already `squall up`

The state:

- ``retwis/follows/U``: the users U follows (a `squall.Set`);
- ``retwis/posts/U``: the ids of U's posts and replies (a `squall.Set`);
- ``retwis/post/ID``: a post or reply, a `squall.MultiKeyCausal` whose value
  is a pickled ``{"author", "text", "reply_to"}``. A reply is written by a
  function that read the post it answers, so (at `causal`) it depends on
  that post's version.

A timeline reads the posts of everyone its user follows and, for a reply,
the post it answers. At `causal` the reply's dependency makes that read see
the post: a timeline never shows a reply without the post it answers, even
when the reader's replicas and cache have not received the post yet.
"""

import pickle
import sys

import squall

FOLLOWS = "retwis/follows/{}"
POSTS = "retwis/posts/{}"
POST = "retwis/post/{}"


def follow(user, other):
    from squall import user as lib

    lib.put(FOLLOWS.format(user), squall.Set([other]))
    return other


def post(author, post_id, text, reply_to=None):
    """Writes a post, or a reply to post `reply_to` (read first: the reply
    depends on what its author saw)."""
    from squall import user as lib

    if reply_to is not None and lib.get(POST.format(reply_to)) is None:
        raise KeyError(f"no post {reply_to} to reply to")
    body = {"author": author, "text": text, "reply_to": reply_to}
    # No dependencies given: at `causal` the write depends on every causal
    # value this call read (the answered post).
    lib.put(POST.format(post_id), squall.MultiKeyCausal(pickle.dumps(body)))
    lib.put(POSTS.format(author), squall.Set([post_id]))
    return post_id


def timeline(user):
    """The posts of everyone `user` follows, each reply with the text of
    the post it answers (`None` if that post could not be read)."""
    from squall import user as lib

    entries = []
    for other in sorted(lib.get(FOLLOWS.format(user)) or ()):
        # Set elements come back as they were put: here, str.
        for post_id in sorted(lib.get(POSTS.format(other)) or ()):
            stored = lib.get(POST.format(post_id))
            if stored is None:
                continue
            body = pickle.loads(stored.values[0])
            if body["reply_to"] is not None:
                answered = lib.get(POST.format(body["reply_to"]))
                body["answers"] = None if answered is None else pickle.loads(answered.values[0])["text"]
            entries.append(body)
    return entries


def register(client):
    for fn in (follow, post, timeline):
        client.register(fn)


def main():
    client = squall.connect(consistency="causal")
    register(client)
    run = sys.argv[1] if len(sys.argv) > 1 else "demo"
    client.call("post", "ada", f"{run}-1", "Analytical engines can weave algebra.")
    client.call("post", "bob", f"{run}-2", "Like a Jacquard loom?", reply_to=f"{run}-1")
    client.call("follow", "cy", "bob")
    for entry in client.call("timeline", "cy"):
        line = f"{entry['author']}: {entry['text']}"
        if entry["reply_to"] is not None:
            line += f"   (in reply to: {entry['answers']!r})"
        print(line)
        assert entry["reply_to"] is None or entry["answers"] is not None
    print("retwis: every reply shown with the post it answers")


if __name__ == "__main__":
    main()
