// A Node.js client of onnxplain, as a service in another language would write one: the .proto files loaded at run
// time with @grpc/proto-loader, calls made with @grpc/grpc-js, tensors decoded from their raw little-endian bytes.
//
// Usage: node tests/node/explain.js HOST:PORT IMAGE.png
// Calls ExplainService.Predict and Explain (occlusion, window 4) on the demo model with the PNG, then the Open
// Inference Protocol's ModelMetadata and ModelInfer on a raw tensor, checked against Predict on the same tensor.
// Prints one JSON summary on stdout; exits 1 with the reason on stderr when a check fails.
"use strict";

const fs = require("node:fs");
const path = require("node:path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const MODEL = "digits";
const WINDOW = 4;
const PROTO_ROOT = path.resolve(__dirname, "..", "..", "proto");
const DEADLINE_MS = 60_000;

function loadServices() {
  const definition = protoLoader.loadSync(
    ["onnxplain/v1/explain_service.proto", "inference/v2/grpc_predict_v2.proto"],
    // Field names as in the .proto; int64 as JavaScript numbers; enums by name.
    { includeDirs: [PROTO_ROOT], keepCase: true, longs: Number, enums: String, defaults: true, oneofs: true },
  );
  const loaded = grpc.loadPackageDefinition(definition);
  return { ExplainService: loaded.onnxplain.v1.ExplainService, InferenceService: loaded.inference.GRPCInferenceService };
}

// One unary call as a promise, with a deadline.
function call(client, method, request) {
  return new Promise((resolve, reject) => {
    const deadline = new Date(Date.now() + DEADLINE_MS);
    client[method](request, { deadline }, (error, response) => (error ? reject(error) : resolve(response)));
  });
}

// An onnxplain.v1.Tensor (raw little-endian bytes) as a plain array of numbers.
function float32Values(tensor) {
  check(tensor.dtype === "DATA_TYPE_FLOAT32", `expected a float32 tensor, got ${tensor.dtype}`);
  return littleEndianFloats(tensor.data);
}

function littleEndianFloats(bytes) {
  check(bytes.length % 4 === 0, `${bytes.length} bytes is not a whole number of float32 values`);
  const values = [];
  for (let offset = 0; offset < bytes.length; offset += 4) values.push(bytes.readFloatLE(offset));
  return values;
}

function check(condition, message) {
  if (!condition) throw new Error(message);
}

// A 28x28 image with a bright diagonal stroke, in the model's own input layout (1, 1, 28, 28).
function strokeTensor() {
  const pixels = new Float32Array(28 * 28);
  for (let i = 4; i < 24; i++) pixels[i * 28 + i] = 1.0;
  return Buffer.from(pixels.buffer);
}

async function explainApi(client, png) {
  const image = { encoded: png };
  const predicted = await call(client, "Predict", { model_name: MODEL, images: [image], top_k: 3 });
  const [prediction] = predicted.predictions;
  const explained = await call(client, "Explain", {
    model_name: MODEL,
    images: [image],
    method: "occlusion",
    parameters: { window: { integer: WINDOW } },
  });
  const [attribution] = explained.explanations[0].attributions;
  const map = float32Values(attribution.attribution);
  const shape = attribution.attribution.shape;
  check(JSON.stringify(shape) === "[28,28]", `the map has shape ${JSON.stringify(shape)}, expected [28,28]`);
  check(map.length === 28 * 28 && map.every(Number.isFinite), "the map is not 28x28 finite values");
  return {
    model: predicted.model_name,
    version: predicted.model_version,
    top: prediction.top.map((c) => ({ class_index: c.class_index, label: c.label, score: c.score })),
    scores: float32Values(prediction.scores),
    method: explained.method,
    window: explained.parameters.window.numbers.values,
    target: attribution.class_index,
    map_shape: shape,
    map,
  };
}

async function inferenceProtocol(explainClient, inferenceClient) {
  const metadata = await call(inferenceClient, "ModelMetadata", { name: MODEL });
  const [input] = metadata.inputs;
  const tensor = strokeTensor();
  const inferred = await call(inferenceClient, "ModelInfer", {
    model_name: MODEL,
    id: "node-client",
    inputs: [{ name: input.name, datatype: "FP32", shape: [1, 1, 28, 28] }],
    raw_input_contents: [tensor],
  });
  check(inferred.id === "node-client", `ModelInfer echoed id ${JSON.stringify(inferred.id)}`);
  const [output] = inferred.outputs;
  const logits = littleEndianFloats(inferred.raw_output_contents[0]);
  // The same tensor through onnxplain's own API: the two protocols must give the same scores.
  const predicted = await call(explainClient, "Predict", {
    model_name: MODEL,
    images: [{ tensor: { dtype: "DATA_TYPE_FLOAT32", shape: [1, 28, 28], data: tensor } }],
  });
  const scores = float32Values(predicted.predictions[0].scores);
  check(logits.length === scores.length, `ModelInfer gave ${logits.length} scores, Predict ${scores.length}`);
  const difference = Math.max(...logits.map((value, i) => Math.abs(value - scores[i])));
  check(difference <= 1e-5, `ModelInfer and Predict differ by ${difference}`);
  return {
    platform: metadata.platform,
    input: { name: input.name, datatype: input.datatype, shape: input.shape },
    output: { name: output.name, datatype: output.datatype, shape: output.shape },
    logits,
    max_difference_from_predict: difference,
  };
}

async function main() {
  const [target, pngPath] = process.argv.slice(2);
  if (!target || !pngPath) throw new Error("usage: node explain.js HOST:PORT IMAGE.png");
  const { ExplainService, InferenceService } = loadServices();
  const credentials = grpc.credentials.createInsecure();
  const explainClient = new ExplainService(target, credentials);
  const inferenceClient = new InferenceService(target, credentials);
  try {
    const summary = await explainApi(explainClient, fs.readFileSync(pngPath));
    summary.inference_protocol = await inferenceProtocol(explainClient, inferenceClient);
    process.stdout.write(JSON.stringify(summary) + "\n");
  } finally {
    explainClient.close();
    inferenceClient.close();
  }
}

main().catch((error) => {
  process.stderr.write(`node client failed: ${error.message}\n`);
  process.exit(1);
});
