/* llvm-sys (built with `disable-alltargets-init`) declares these symbols and expects the crate
 * that links LLVM to define them: `llvm-c/Target.h` only has them as `static inline` functions,
 * which Rust cannot call. Each forwards to the header's function of the same name. */
#include <llvm-c/Target.h>

void LLVM_InitializeAllTargetInfos(void) { LLVMInitializeAllTargetInfos(); }
void LLVM_InitializeAllTargets(void) { LLVMInitializeAllTargets(); }
void LLVM_InitializeAllTargetMCs(void) { LLVMInitializeAllTargetMCs(); }
void LLVM_InitializeAllAsmPrinters(void) { LLVMInitializeAllAsmPrinters(); }
void LLVM_InitializeAllAsmParsers(void) { LLVMInitializeAllAsmParsers(); }
void LLVM_InitializeAllDisassemblers(void) { LLVMInitializeAllDisassemblers(); }

LLVMBool LLVM_InitializeNativeTarget(void) { return LLVMInitializeNativeTarget(); }
LLVMBool LLVM_InitializeNativeAsmParser(void) { return LLVMInitializeNativeAsmParser(); }
LLVMBool LLVM_InitializeNativeAsmPrinter(void) { return LLVMInitializeNativeAsmPrinter(); }
LLVMBool LLVM_InitializeNativeDisassembler(void) { return LLVMInitializeNativeDisassembler(); }
