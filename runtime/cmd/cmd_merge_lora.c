/* runtime/cmd/cmd_merge_lora.c - `tessera merge-lora`: a PEFT LoRA adapter
 * folded into its base model's weights and written as a Hugging Face
 * directory (shard/merge.h does the work). One process: it runs before MPI
 * is set up, and refuses to run as several ranks of an mpirun.
 *
 * What it is not: the merge (shard/merge.c). */
#include <stdio.h>
#include <stdlib.h>

#include "base/clock.h"
#include "base/log.h"
#include "runtime/cmd/cmd.h"

void cmd_merge_usage(FILE *f) {
    fputs("usage: tessera merge-lora --model M --adapter DIR --out OUTDIR [--dtype f32|bf16]\n"
          "\n"
          "Folds the PEFT LoRA adapter DIR into the weights of M (a .gguf file or a Hugging\n"
          "Face directory) and writes OUTDIR, a Hugging Face directory (config.json,\n"
          "model.safetensors, tokenizer files) that `tessera generate --model OUTDIR` runs\n"
          "like `--model M --adapter DIR`. Each adapted weight becomes W + scaling * B A.\n"
          "OUTDIR must not exist (or be empty); it appears complete or not at all.\n"
          "\n"
          "  --dtype f32|bf16   weight type in model.safetensors (default f32)\n"
          "\n"
          "One process (no mpirun). Exit status: 0 written; 1 a failure; 2 bad usage.\n",
          f);
}

/* Runs before MPI is set up: the merge is a single-process file conversion.
 * Under mpirun with more than one rank it refuses (every rank exits 2). */
int cmd_merge_lora(const cmd_options *o) {
    /* mpirun sets one of these in every rank it starts. */
    static const char *const size_vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE",
                                            "MPI_LOCALNRANKS", NULL};
    for (const char *const *v = size_vars; *v; v++) {
        const char *e = getenv(*v);
        if (e && atoi(e) > 1) {
            const char *r = getenv("OMPI_COMM_WORLD_RANK");
            if (!r || atoi(r) == 0)
                fprintf(stderr,
                        "tessera merge-lora: runs as one process; do not start it "
                        "under mpirun with more than one rank (%s=%s)\n",
                        *v, e);
            return 2;
        }
    }
    tsr_log_init(TSR_LOG_WARN, 0, 1);
    double t0 = tsr_now_s();
    tsr_status st = tsr_merge_lora(o->model, o->adapter, o->out, o->merge_dtype);
    if (st != TSR_OK) {
        fprintf(stderr, "tessera merge-lora: error: %s\n",
                tsr_error_msg()[0] ? tsr_error_msg() : tsr_status_str(st));
        return st == TSR_ERR_INVALID || st == TSR_ERR_RANGE ? 2 : 1;
    }
    fprintf(stderr, "tessera merge-lora: wrote %s (%s) in %.1f s\n", o->out,
            o->merge_dtype == TSR_MERGE_BF16 ? "bf16" : "f32", tsr_now_s() - t0);
    return 0;
}
