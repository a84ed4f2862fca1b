// Lint: typescript-eslint's recommended rules on every TypeScript file of the package, and the
// recommended rules on the dashboard's browser modules (dashboard/js/, no build step).
import js from "@eslint/js";
import tseslint from "typescript-eslint";

export default tseslint.config(
  { ignores: ["node_modules/", ".wrangler/", ".local/", "bench/.out/", "dist/", "orchestrator/worker-configuration.d.ts"] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_" }],
      "@typescript-eslint/no-explicit-any": "error",
    },
  },
  {
    // The Node guard is plain JavaScript run by whatever Node npm finds (scripts/check-node.js).
    files: ["scripts/**/*.js"],
    languageOptions: { sourceType: "module", globals: { process: "readonly", console: "readonly" } },
  },
  {
    // The dashboard runs in the browser: its globals, named here rather than through another dependency.
    files: ["dashboard/**/*.js"],
    languageOptions: {
      sourceType: "module",
      globals: Object.fromEntries(
        [
          "document", "window", "location", "navigator", "fetch", "sessionStorage", "EventSource", "MessageEvent",
          "setTimeout", "clearTimeout", "URLSearchParams", "console",
        ].map((name) => [name, "readonly"]),
      ),
    },
  },
);
