// moofa's measurement runner: one .tflite on a Cortex-M build of TFLM, in QEMU.
//
// Reads `moofa-model.tflite` (and, when present, `moofa-inputs.bin`: every input tensor's bytes
// in order) from QEMU's working folder through semihosting, builds the interpreter the way the
// tflite-micro host package does (a RecordingMicroAllocator carved from one arena, every op
// TFLM offers registered, one resource variable per distinct VAR_HANDLE name, as the package's
// runtime.py counts them and moofa's firmware makes them), sets the inputs (zeros without the file),
// invokes once and prints, one fact per line:
//
//   moofa-runner: allocate ok | moofa-runner: allocate failed
//   moofa-arena-used N            (MicroInterpreter::arena_used_bytes)
//   TFLM's own PrintAllocations() lines (head, tail, and each allocation kind)
//   moofa-output I NBYTES HEX     (every output tensor, after the invoke)
//   moofa-firmware-arena-used N   (the same model on a plain MicroAllocator, as firmware has it:
//                                  the recording allocator's own objects are larger)
//   moofa-firmware-min-arena N    (the smallest 16-byte multiple AllocateTensors succeeds in)
//   moofa-runner: done
//
// The exit code is 0 when everything ran, 2 when the model cannot be read, 3 when
// AllocateTensors fails and 4 when Invoke fails. The model and the arena live in the board's
// PSRAM (MOOFA_PSRAM_BASE, 16 MiB): the model in the first half, the arena in the second.

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>

#include "tensorflow/lite/micro/micro_allocator.h"
#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"
#include "tensorflow/lite/micro/micro_resource_variable.h"
#include "tensorflow/lite/micro/recording_micro_allocator.h"
#include "tensorflow/lite/schema/schema_generated.h"

#ifndef MOOFA_PSRAM_BASE
#error "MOOFA_PSRAM_BASE must name the board's PSRAM address"
#endif

namespace {

constexpr uintptr_t kPsram = MOOFA_PSRAM_BASE;
constexpr size_t kHalf = 8u << 20;
uint8_t* const kModel = reinterpret_cast<uint8_t*>(kPsram);
uint8_t* const kArena = reinterpret_cast<uint8_t*>(kPsram + kHalf);

// Every builtin and custom op of the resolver: generated from TFLM's own header when the
// runner is built (toolchain/runtime/cortexm.py), so nothing here names an op.
constexpr int kOps = MOOFA_OP_COUNT;

long ReadFile(const char* name, uint8_t* into, size_t room) {
  FILE* f = std::fopen(name, "rb");
  if (f == nullptr) return -1;
  size_t n = std::fread(into, 1, room, f);
  bool more = std::fgetc(f) != EOF;
  std::fclose(f);
  return more ? -2 : static_cast<long>(n);
}

// The distinct shared names of the model's VAR_HANDLE ops, every subgraph.
int ResourceVariableCount(const tflite::Model* model) {
  const char* names[256];
  int count = 0;
  if (model->subgraphs() == nullptr || model->operator_codes() == nullptr) return 0;
  for (const tflite::SubGraph* subgraph : *model->subgraphs()) {
    if (subgraph->operators() == nullptr) continue;
    for (const tflite::Operator* op : *subgraph->operators()) {
      if (op->opcode_index() >= model->operator_codes()->size()) continue;
      const tflite::OperatorCode* code = model->operator_codes()->Get(op->opcode_index());
      // The schema keeps the code in builtin_code since v3a, in the deprecated byte before.
      const int builtin = std::max(static_cast<int>(code->builtin_code()), static_cast<int>(code->deprecated_builtin_code()));
      if (builtin != tflite::BuiltinOperator_VAR_HANDLE) continue;
      const tflite::VarHandleOptions* options = op->builtin_options_as_VarHandleOptions();
      const char* name = options != nullptr && options->shared_name() != nullptr ? options->shared_name()->c_str() : "";
      bool seen = false;
      for (int i = 0; i < count && !seen; ++i) seen = std::strcmp(names[i], name) == 0;
      if (!seen && count < 256) names[count++] = name;
    }
  }
  return count;
}

// An interpreter on `allocator`, with the model's resource variables carved from it first.
tflite::MicroResourceVariables* Variables(tflite::MicroAllocator* allocator, int count) {
  return count > 0 ? tflite::MicroResourceVariables::Create(allocator, count) : nullptr;
}

}  // namespace

int main() {
  long model_bytes = ReadFile("moofa-model.tflite", kModel, kHalf);
  if (model_bytes <= 0) {
    std::printf("moofa-runner: cannot read moofa-model.tflite (%ld)\n", model_bytes);
    return 2;
  }
  const tflite::Model* model = tflite::GetModel(kModel);
  static tflite::MicroMutableOpResolver<kOps> resolver;
#include "moofa_ops.inc"
  const int variables = ResourceVariableCount(model);

  size_t firmware_used = 0;
  {
    // What firmware gets: MicroInterpreter on its own arena, no recording (AllocateTensors only).
    tflite::MicroAllocator* plain = tflite::MicroAllocator::Create(kArena, kHalf);
    tflite::MicroInterpreter firmware(model, resolver, plain, Variables(plain, variables));
    if (firmware.AllocateTensors() == kTfLiteOk) {
      firmware_used = firmware.arena_used_bytes();
      std::printf("moofa-firmware-arena-used %u\n", static_cast<unsigned>(firmware_used));
    }
  }
  if (firmware_used > 0) {
    // The smallest arena AllocateTensors succeeds in (16-byte steps): allocation needs temporary
    // room (the planner's working memory) that the final figure does not show.
    size_t lo = firmware_used & ~static_cast<size_t>(15), hi = firmware_used + 16 * 1024;
    auto fits = [&](size_t n) {
      tflite::MicroAllocator* small = tflite::MicroAllocator::Create(kArena, n);
      if (small == nullptr) return false;
      tflite::MicroInterpreter probe(model, resolver, small, Variables(small, variables));
      return probe.AllocateTensors() == kTfLiteOk;
    };
    while (!fits(hi) && hi < kHalf) hi *= 2;
    while (lo + 16 < hi) {
      size_t mid = ((lo + hi) / 2) & ~static_cast<size_t>(15);
      if (fits(mid)) hi = mid; else lo = mid;
    }
    std::printf("moofa-firmware-min-arena %u\n", static_cast<unsigned>(hi));
  }
  std::memset(kArena, 0, kHalf);
  tflite::RecordingMicroAllocator* allocator = tflite::RecordingMicroAllocator::Create(kArena, kHalf);
  tflite::MicroInterpreter interpreter(model, resolver, allocator, Variables(allocator, variables));
  if (interpreter.AllocateTensors() != kTfLiteOk) {
    std::printf("moofa-runner: allocate failed\n");
    allocator->PrintAllocations();
    return 3;
  }
  std::printf("moofa-runner: allocate ok\n");

  FILE* inputs = std::fopen("moofa-inputs.bin", "rb");
  for (size_t i = 0; i < interpreter.inputs_size(); ++i) {
    TfLiteTensor* t = interpreter.input(i);
    std::memset(t->data.raw, 0, t->bytes);
    if (inputs != nullptr && std::fread(t->data.raw, 1, t->bytes, inputs) != t->bytes) {
      std::printf("moofa-runner: moofa-inputs.bin is shorter than the inputs\n");
      return 2;
    }
  }
  if (inputs != nullptr) std::fclose(inputs);

  if (interpreter.Invoke() != kTfLiteOk) {
    std::printf("moofa-runner: invoke failed\n");
    return 4;
  }
  std::printf("moofa-arena-used %u\n", static_cast<unsigned>(interpreter.arena_used_bytes()));
  std::fflush(stdout);
  allocator->PrintAllocations();
  for (size_t i = 0; i < interpreter.outputs_size(); ++i) {
    const TfLiteTensor* t = interpreter.output(i);
    std::printf("moofa-output %u %u ", static_cast<unsigned>(i), static_cast<unsigned>(t->bytes));
    for (size_t k = 0; k < t->bytes; ++k) std::printf("%02x", t->data.uint8[k]);
    std::printf("\n");
  }
  std::printf("moofa-runner: done\n");
  return 0;
}
