/* Segment one grayscale slice with skipseg's C library.
 *
 *   segment MODEL IN.pgm OUT.(pgm|pfm) [--tile N] [--halo N] [--threads N]
 *           [--averaging model|none|flips|dihedral] [--max-bytes N]
 *
 * MODEL is an ONNX file or, with the embedded library, an embedded model
 * (`segment-run optimize --embedded`). With an embedded model the program prints the
 * peak bytes the call will need before it runs, and --max-bytes N makes the library
 * refuse a call that would need more (SKIPSEG_STATUS_ERR_MEMORY) instead of running it.
 *
 * IN is a binary PGM (P5, 8 or 16 bit). OUT.pgm gets the membrane probability as 8-bit
 * gray (p * 255 rounded half to even, as segment-run's PNG); OUT.pfm as 32-bit floats
 * (Portable Float Map, bottom row first). Build (see docs/EMBEDDING.md):
 *
 *   bash scripts/build-clib.sh
 *   cc -O2 -I runtime/include examples/c/segment.c -L target/clib \
 *      -lskipseg_runtime -lm -Wl,-rpath,$PWD/target/clib -o segment
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "skipseg.h"

static int fail(const char *what) {
  fprintf(stderr, "error: %s: %s\n", what, skipseg_last_error());
  return 2;
}

/* Read a P5 PGM into rows `stride` bytes apart (padded, to show row strides). */
static uint8_t *read_pgm(const char *path, size_t *w, size_t *h, int *type,
                         size_t *stride, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) { fprintf(stderr, "error: %s: cannot open\n", path); return NULL; }
  unsigned width, height, maxval;
  if (fscanf(f, "P5 %u %u %u", &width, &height, &maxval) != 3 || fgetc(f) == EOF ||
      width == 0 || height == 0 || (maxval != 255 && maxval != 65535)) {
    fprintf(stderr, "error: %s: not an 8/16-bit binary PGM\n", path);
    fclose(f);
    return NULL;
  }
  size_t bpp = maxval == 255 ? 1 : 2;
  *w = width; *h = height;
  *type = bpp == 1 ? SKIPSEG_PIXEL_TYPE_U8 : SKIPSEG_PIXEL_TYPE_U16;
  *stride = width * bpp + 16;
  *len = *stride * height;
  uint8_t *pixels = calloc(*len, 1);
  for (size_t y = 0; pixels && y < height; y++) {
    uint8_t *row = pixels + y * *stride;
    if (fread(row, bpp, width, f) != width) {
      fprintf(stderr, "error: %s: truncated\n", path);
      free(pixels); fclose(f); return NULL;
    }
    if (bpp == 2) /* PGM is big-endian; the library reads native u16 */
      for (size_t x = 0; x < width; x++) {
        uint16_t v = (uint16_t)(row[2 * x] << 8 | row[2 * x + 1]);
        memcpy(row + 2 * x, &v, 2);
      }
  }
  fclose(f);
  return pixels;
}

static int write_output(const char *path, const float *p, size_t w, size_t h) {
  size_t n = strlen(path);
  int pfm = n > 4 && strcmp(path + n - 4, ".pfm") == 0;
  FILE *f = fopen(path, "wb");
  if (!f) { fprintf(stderr, "error: %s: cannot create\n", path); return 2; }
  if (pfm) {
    fprintf(f, "Pf\n%zu %zu\n-1.0\n", w, h); /* -1: little-endian floats */
    for (size_t y = h; y-- > 0;) fwrite(p + y * w, sizeof(float), w, f);
  } else {
    fprintf(f, "P5\n%zu %zu\n255\n", w, h);
    for (size_t i = 0; i < w * h; i++) {
      float v = p[i] < 0 ? 0 : p[i] > 1 ? 1 : p[i];
      /* half to even (lrintf in the default rounding mode), as segment-run's 8 bits */
      fputc((int)lrintf(v * 255.0f), f);
    }
  }
  if (fclose(f) != 0) { fprintf(stderr, "error: %s: write failed\n", path); return 2; }
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: %s MODEL IN.pgm OUT.(pgm|pfm) [--tile N] [--halo N] "
                    "[--threads N] [--averaging model|none|flips|dihedral] "
                    "[--max-bytes N]\n", argv[0]);
    return 2;
  }
  if (skipseg_abi_version() != SKIPSEG_ABI_VERSION) {
    fprintf(stderr, "error: library ABI %u, header %u\n", skipseg_abi_version(),
            (unsigned)SKIPSEG_ABI_VERSION);
    return 2;
  }
  SkipsegOptions options;
  skipseg_options_default(&options);
  uint64_t max_bytes = 0;
  for (int i = 4; i + 1 < argc; i += 2) {
    const char *k = argv[i], *v = argv[i + 1];
    if (!strcmp(k, "--tile")) options.tile = (uint32_t)atoi(v);
    else if (!strcmp(k, "--max-bytes")) max_bytes = strtoull(v, NULL, 10);
    else if (!strcmp(k, "--halo")) options.halo = (int32_t)atoi(v);
    else if (!strcmp(k, "--threads")) options.threads = (uint32_t)atoi(v);
    else if (!strcmp(k, "--averaging"))
      options.averaging = !strcmp(v, "none")       ? SKIPSEG_AVERAGING_NONE
                          : !strcmp(v, "flips")    ? SKIPSEG_AVERAGING_FLIPS
                          : !strcmp(v, "dihedral") ? SKIPSEG_AVERAGING_DIHEDRAL
                                                   : SKIPSEG_AVERAGING_MODEL_DEFAULT;
    else { fprintf(stderr, "error: unknown option %s\n", k); return 2; }
  }

  SkipsegModel *model = NULL;
  if (skipseg_model_load(argv[1], &model) != SKIPSEG_STATUS_OK) return fail(argv[1]);
  SkipsegModelInfo info;
  skipseg_model_info(model, &info);
  fprintf(stderr, "%s: %u channel(s), down-sampling %u, receptive radius %u px\n", argv[1],
          info.in_channels, info.down_factor, info.receptive_radius);

  size_t w, h, stride, len;
  int type;
  uint8_t *pixels = read_pgm(argv[2], &w, &h, &type, &stride, &len);
  if (!pixels) { skipseg_model_free(model); return 2; }
  /* an embedded model reports the memory a call needs before it runs */
  uint64_t need = 0;
  if (skipseg_segment_peak_bytes(model, &options, w, h, &need) == SKIPSEG_STATUS_OK)
    fprintf(stderr, "peak memory of this call: %llu bytes\n", (unsigned long long)need);
  if (max_bytes > 0 && skipseg_model_set_memory_limit(model, max_bytes) != SKIPSEG_STATUS_OK) {
    free(pixels);
    skipseg_model_free(model);
    return fail("--max-bytes");
  }
  float *prob = malloc(w * h * sizeof(float));
  int rc = 0;
  if (!prob ||
      skipseg_segment(model, pixels, len, type, w, h, stride, &options, prob, w * h) !=
          SKIPSEG_STATUS_OK)
    rc = fail(argv[2]);
  else
    rc = write_output(argv[3], prob, w, h);
  free(prob);
  free(pixels);
  skipseg_model_free(model);
  return rc;
}
