// Hash routing: the first route whose pattern matches location.hash shows its page in `view`;
// a page returns its teardown (timers, streams), run before the next page is shown.

/** routes: [{ pattern, show(view, ...decodedGroups) => teardown }]; end with a catch-all. */
export function startRouter(view, routes) {
  let teardown = () => {};
  function route() {
    teardown();
    teardown = () => {};
    view.replaceChildren();
    for (const { pattern, show } of routes) {
      const m = location.hash.match(pattern);
      if (!m) continue;
      teardown = show(view, ...m.slice(1).map((g) => decodeURIComponent(g)));
      return;
    }
  }
  window.addEventListener("hashchange", route);
  route();
}
