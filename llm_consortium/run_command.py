"""``llm consortium run``: a one-off consortium, nothing saved but the run.

The arbiter is optional here (without one the first successful member
answer wins, in config order); ``--save NAME`` keeps the configuration and, like
``save``, then requires ``--arbiter``. Inputs follow ``llm``: the prompt is
read from stdin when it is piped in (or when none is given), ``-a``/``--at``
attach files to every member's prompt, ``-f``/``--sf`` add fragments.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from .cli import config_options, friendly_errors
from .errors import ConfigError

FRAGMENT_FETCH_TIMEOUT = 30.0


def read_attachment(value: str, mimetype: str | None = None) -> Any:
    """An ``llm.Attachment`` for a path, a URL or ``-`` (stdin)."""
    import llm

    if value == "-":
        attachment = llm.Attachment(type=mimetype, content=sys.stdin.buffer.read())
    elif "://" in value:
        attachment = llm.Attachment(type=mimetype, url=value)
    else:
        path = Path(value)
        if not path.is_file():
            raise ConfigError(f"Attachment {value} does not exist")
        attachment = llm.Attachment(type=mimetype, path=str(path.resolve()))
        if mimetype is None and not attachment.resolve_type():
            # llm sniffs the content, which cannot recognise CSV or Markdown: go by the name.
            import mimetypes

            attachment.type = mimetypes.guess_type(path.name)[0]
    if mimetype is None and attachment.url is None and not attachment.resolve_type():
        raise ConfigError(f"Could not determine the type of attachment {value}; use --at PATH TYPE")
    return attachment


def read_fragment(value: str) -> list[Any]:
    """Fragment text (and any attachments a loader returns) for a file path,
    a URL, ``-`` (stdin) or a plugin's ``prefix:argument``."""
    import llm

    if value == "-":
        return [sys.stdin.read()]
    if value.startswith(("http://", "https://")):
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(value, timeout=FRAGMENT_FETCH_TIMEOUT) as reply:
                return [reply.read().decode("utf-8", errors="replace")]
        except (urllib.error.URLError, OSError) as ex:
            raise ConfigError(f"Could not load fragment {value}: {ex}") from None
    path = Path(value)
    if path.is_file():
        return [path.read_text()]
    prefix, sep, rest = value.partition(":")
    loaders = llm.get_fragment_loaders() if sep else {}
    if prefix in loaders:
        try:
            loaded = loaders[prefix](rest)
        except Exception as ex:  # a plugin's loader: report it, do not crash
            raise ConfigError(f"Could not load fragment {value}: {ex}") from None
        return list(loaded) if isinstance(loaded, list) else [loaded]
    raise ConfigError(
        f"Fragment '{value}' not found (give a file, a URL, '-' or a loader prefix; "
        "saved fragment aliases work with 'llm -m NAME -f ALIAS')"
    )


def split_fragments(values: tuple[str, ...]) -> tuple[list[str], list[Any]]:
    """Fragment texts and the attachments some loaders return instead."""
    import llm

    texts: list[str] = []
    attachments: list[Any] = []
    for value in values:
        for item in read_fragment(value):
            if isinstance(item, llm.Attachment):
                attachments.append(item)
            else:
                texts.append(str(item))
    return texts, attachments


def read_prompt(prompt: str | None, stdin_used: bool, has_other_input: bool) -> str:
    """The prompt as ``llm`` reads it: piped stdin comes first, then PROMPT;
    with no PROMPT on a terminal, wait for it on stdin."""
    if not stdin_used and not sys.stdin.isatty():
        piped = sys.stdin.read()
        if piped:
            prompt = " ".join([piped, prompt] if prompt else [piped])
    if prompt is None and not stdin_used and not has_other_input and sys.stdin.isatty():
        prompt = sys.stdin.read()
    return prompt or ""


def combine_system(system: str | None, fragments: list[str]) -> str | None:
    """System fragments, then the system prompt, as ``llm`` joins them."""
    bits = [bit.strip() for bit in [*fragments, system or ""] if bit.strip()]
    return "\n\n".join(bits) or None


def register(consortium: click.Group) -> None:
    @consortium.command(name="run")
    @click.argument("prompt", required=False)
    @config_options
    @click.option(
        "-a",
        "--attachment",
        "attachments",
        multiple=True,
        metavar="PATH",
        help="Attachment for every member: a file, a URL or - for stdin",
    )
    @click.option(
        "--at",
        "--attachment-type",
        "typed_attachments",
        type=(str, str),
        multiple=True,
        metavar="<PATH TYPE>",
        help="Attachment with an explicit MIME type",
    )
    @click.option(
        "-f",
        "--fragment",
        "fragments",
        multiple=True,
        help="Fragment added before the prompt: a file, a URL, - or a loader's prefix:value",
    )
    @click.option(
        "--sf",
        "--system-fragment",
        "system_fragments",
        multiple=True,
        help="Fragment added to the system prompt",
    )
    @click.option("--save", "save_as", metavar="NAME", help="Also save this configuration as NAME")
    @click.option("--no-stream", is_flag=True, help="Print the answer when the run ends")
    @click.option("-q", "--quiet", is_flag=True, help="No live progress on stderr")
    @friendly_errors
    def run_command(
        prompt,
        attachments,
        typed_attachments,
        fragments,
        system_fragments,
        save_as,
        no_stream,
        quiet,
        **options,
    ):
        """Run a one-off consortium on PROMPT, without saving it.

        The prompt is read from stdin when piped in or when PROMPT is
        omitted. --arbiter is optional here: without one the first
        successful member answer wins. --save NAME keeps the configuration
        (and then needs --arbiter, as 'save' does).

        \b
        Example usage:
            llm consortium run "Is 1009 prime?" -m gpt-4o-mini:3 --arbiter gpt-4o
            cat question.txt | llm consortium run -m a -m b --arbiter c --save my-team
            llm consortium run "What is in this picture?" -a photo.jpg -m a -m b --arbiter c
        """
        from .cli import config_from_options, save_config

        if save_as and not options.get("arbiter"):
            raise ConfigError(
                "--save needs --arbiter: a saved consortium is judged by an arbiter "
                "(as with 'llm consortium save')"
            )
        config = config_from_options(require_arbiter=False, **options)
        stdin_used = "-" in (*attachments, *fragments, *system_fragments) or any(
            path == "-" for path, _ in typed_attachments
        )
        files = [read_attachment(value) for value in attachments]
        files += [read_attachment(value, mimetype) for value, mimetype in typed_attachments]
        texts, loaded = split_fragments(fragments)
        system_texts, system_loaded = split_fragments(system_fragments)
        files += loaded + system_loaded
        prompt = read_prompt(prompt, stdin_used, bool(files or texts))
        prompt = "\n".join([*texts, *([prompt] if prompt else [])])
        if not prompt.strip() and not files:
            raise ConfigError("No prompt given: pass PROMPT or pipe it on stdin.")
        if save_as:
            save_config(save_as, config)
            click.echo(f"Consortium configuration '{save_as}' saved.", err=True)
        system = combine_system(config.system_prompt, system_texts)
        if system != config.system_prompt:
            config = config.with_overrides(system_prompt=system)
        run_and_print(config, save_as, prompt, files, stream=not no_stream, quiet=quiet)


def run_and_print(
    config: Any, name: str | None, prompt: str, attachments: list[Any], *, stream: bool, quiet: bool
) -> None:
    """Drive one run: the answer to stdout, progress and failures to stderr."""
    from .orchestrator import ConsortiumOrchestrator
    from .progress import Reporter, answer_pieces

    run = ConsortiumOrchestrator(config, config_name=name).run(
        prompt, attachments=attachments, stream_final=stream
    )
    printed = False
    try:
        for piece in answer_pieces(run, Reporter(live=False if quiet else None)):
            click.echo(piece, nl=False)
            sys.stdout.flush()
            printed = True
    except KeyboardInterrupt:
        sys.exit(130)
    if printed:
        click.echo()
