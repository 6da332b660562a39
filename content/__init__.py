"""Content: layouts, blocks and content packs; the sandboxed Jinja environment;
the CSS-inlining cache; block selection for a recipient.

- ``models``: packs, layouts, blocks and their immutable versions;
- ``packs``: reading a pack directory (docs/content-packs.md) into versions;
- ``packfiles``: the one way a pack's files are read: inside the pack, no links,
  plain files of bounded size, YAML of bounded depth and size;
- ``rendering``: the sandbox, compiling a version once (CSS inlined, links
  rewritten, text derived) and rendering it per recipient within limits;
- ``bounds``: those limits (time, loop steps, the size of every value), held
  by the sandbox's hooks whatever a template does;
- ``checking``: static checks of templates (syntax, filters, merge fields,
  phrases, slots) at import, campaign creation, preview and send;
- ``css``: what premailer leaves undone: the cascade in style attributes, and
  the CSS that must stay in a ``<style>`` in the head;
- ``inlining``: premailer's results shared by every worker and run;
- ``text``: the text part derived from HTML;
- ``selection``: the pure function that picks a block per slot.

May import ``segments`` only; never ``delivery``.
"""
