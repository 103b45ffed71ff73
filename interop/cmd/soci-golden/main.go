// Command soci-golden runs upstream SOCI's own Go packages on test inputs and writes what they produce,
// so the Python implementation can be checked byte for byte against it.
//
// Subcommands (flags before positional arguments):
//
//	soci-golden ztoc --span-size N --algorithm gzip|uncompressed --out ZTOC LAYER
//	soci-golden create --span-size N --min-layer-size M [--platform P] [--optimizations xattr] SRC_LAYOUT OUT_DIR
//	soci-golden info ZTOC
//	soci-golden extract --ztoc ZTOC LAYER NAME
//	soci-golden version
//
// Output JSON goes to stdout; upstream's own progress lines go to stderr.
package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"

	"github.com/awslabs/soci-snapshotter/soci"
	"github.com/awslabs/soci-snapshotter/soci/store"
	"github.com/awslabs/soci-snapshotter/ztoc"
	"github.com/awslabs/soci-snapshotter/ztoc/compression"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/plugins/content/local"
	"github.com/containerd/platforms"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content/oci"
)

const upstreamModule = "github.com/awslabs/soci-snapshotter"

// buildToolIdentifier is the value upstream's CLI passes to its builders.
const buildToolIdentifier = "AWS SOCI CLI v0.2"

// gzip zinfo blob layout (see soci-format.md §2.1); used only to summarise checkpoints for humans.
const (
	zinfoHeaderSize     = 12
	zinfoCheckpointSize = 8 + 8 + 1 + 32768
)

func main() {
	if len(os.Args) < 2 {
		fail(errors.New("usage: soci-golden ztoc|create|info|extract|version ..."))
	}
	var err error
	switch os.Args[1] {
	case "ztoc":
		err = cmdZtoc(os.Args[2:])
	case "create":
		err = cmdCreate(os.Args[2:])
	case "info":
		err = cmdInfo(os.Args[2:])
	case "extract":
		err = cmdExtract(os.Args[2:])
	case "version":
		err = printJSON(map[string]string{"upstream": upstreamVersion()})
	default:
		err = fmt.Errorf("unknown subcommand %q", os.Args[1])
	}
	if err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "soci-golden:", err)
	os.Exit(1)
}

func printJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// upstreamVersion reports which upstream module version this binary was linked against.
func upstreamVersion() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	for _, dep := range info.Deps {
		if dep.Path == upstreamModule {
			if dep.Replace != nil {
				return dep.Replace.Version
			}
			return dep.Version
		}
	}
	return "unknown"
}

type checkpoint struct {
	In   int64 `json:"in"`
	Out  int64 `json:"out"`
	Bits uint8 `json:"bits"`
}

type ztocSummary struct {
	Upstream                string       `json:"upstream"`
	Digest                  string       `json:"digest"`
	Size                    int64        `json:"size"`
	Version                 string       `json:"version"`
	BuildToolIdentifier     string       `json:"build_tool_identifier"`
	CompressionAlgorithm    string       `json:"compression_algorithm"`
	MaxSpanID               int64        `json:"max_span_id"`
	SpanDigests             []string     `json:"span_digests"`
	NumEntries              int          `json:"num_entries"`
	UncompressedArchiveSize int64        `json:"uncompressed_archive_size"`
	CompressedArchiveSize   int64        `json:"compressed_archive_size"`
	CheckpointsSize         int          `json:"checkpoints_size"`
	CheckpointsSHA256       string       `json:"checkpoints_sha256"`
	ZinfoSpanSize           *int64       `json:"zinfo_span_size,omitempty"`
	Checkpoints             []checkpoint `json:"checkpoints,omitempty"`
}

func summarise(z *ztoc.Ztoc, digest string, size int64) ztocSummary {
	sum := sha256.Sum256(z.Checkpoints)
	s := ztocSummary{
		Upstream:                upstreamVersion(),
		Digest:                  digest,
		Size:                    size,
		Version:                 string(z.Version),
		BuildToolIdentifier:     z.BuildToolIdentifier,
		CompressionAlgorithm:    z.CompressionAlgorithm,
		MaxSpanID:               int64(z.MaxSpanID),
		SpanDigests:             make([]string, 0, len(z.SpanDigests)),
		NumEntries:              len(z.FileMetadata),
		UncompressedArchiveSize: int64(z.UncompressedArchiveSize),
		CompressedArchiveSize:   int64(z.CompressedArchiveSize),
		CheckpointsSize:         len(z.Checkpoints),
		CheckpointsSHA256:       "sha256:" + hex.EncodeToString(sum[:]),
	}
	for _, d := range z.SpanDigests {
		s.SpanDigests = append(s.SpanDigests, d.String())
	}
	if z.CompressionAlgorithm == compression.Gzip {
		s.ZinfoSpanSize, s.Checkpoints = decodeGzipCheckpoints(z.Checkpoints)
	}
	return s
}

// decodeGzipCheckpoints lists (in, out, bits) of a v2 gzip zinfo blob; nil if the blob is not v2-shaped.
func decodeGzipCheckpoints(blob []byte) (*int64, []checkpoint) {
	if len(blob) < zinfoHeaderSize {
		return nil, nil
	}
	n := int(int32(binary.LittleEndian.Uint32(blob[0:4])))
	span := int64(binary.LittleEndian.Uint64(blob[4:12]))
	if n < 0 || len(blob) != zinfoHeaderSize+n*zinfoCheckpointSize {
		return &span, nil
	}
	cps := make([]checkpoint, 0, n)
	for i := 0; i < n; i++ {
		rec := blob[zinfoHeaderSize+i*zinfoCheckpointSize:]
		cps = append(cps, checkpoint{
			In:   int64(binary.LittleEndian.Uint64(rec[0:8])),
			Out:  int64(binary.LittleEndian.Uint64(rec[8:16])),
			Bits: rec[16],
		})
	}
	return &span, cps
}

func cmdZtoc(args []string) error {
	fs := flag.NewFlagSet("ztoc", flag.ContinueOnError)
	span := fs.Int64("span-size", 4<<20, "span size")
	algorithm := fs.String("algorithm", compression.Gzip, "gzip or uncompressed")
	out := fs.String("out", "", "where to write the marshalled zTOC")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 || *out == "" {
		return errors.New("usage: soci-golden ztoc --span-size N --algorithm A --out ZTOC LAYER")
	}
	builder := ztoc.NewBuilder(buildToolIdentifier)
	z, err := builder.BuildZtoc(fs.Arg(0), *span, ztoc.WithCompression(*algorithm))
	if err != nil {
		return fmt.Errorf("build ztoc: %w", err)
	}
	r, desc, err := ztoc.Marshal(z)
	if err != nil {
		return fmt.Errorf("marshal ztoc: %w", err)
	}
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if err := os.WriteFile(*out, data, 0o644); err != nil {
		return err
	}
	return printJSON(summarise(z, desc.Digest.String(), desc.Size))
}

func cmdInfo(args []string) error {
	if len(args) != 1 {
		return errors.New("usage: soci-golden info ZTOC")
	}
	data, err := os.ReadFile(args[0])
	if err != nil {
		return err
	}
	z, err := ztoc.Unmarshal(bytes.NewReader(data))
	if err != nil {
		return err
	}
	sum := sha256.Sum256(data)
	return printJSON(summarise(z, "sha256:"+hex.EncodeToString(sum[:]), int64(len(data))))
}

func cmdExtract(args []string) error {
	fs := flag.NewFlagSet("extract", flag.ContinueOnError)
	ztocPath := fs.String("ztoc", "", "zTOC file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 2 || *ztocPath == "" {
		return errors.New("usage: soci-golden extract --ztoc ZTOC LAYER NAME")
	}
	data, err := os.ReadFile(*ztocPath)
	if err != nil {
		return err
	}
	z, err := ztoc.Unmarshal(bytes.NewReader(data))
	if err != nil {
		return err
	}
	layer, err := os.Open(fs.Arg(0))
	if err != nil {
		return err
	}
	defer layer.Close()
	st, err := layer.Stat()
	if err != nil {
		return err
	}
	content, err := z.ExtractFile(io.NewSectionReader(layer, 0, st.Size()), fs.Arg(1))
	if err != nil {
		return err
	}
	_, err = os.Stdout.Write(content)
	return err
}

// cmdCreate builds a v1 SOCI index (with subject) for an OCI image layout using upstream's IndexBuilder,
// the library path behind `soci create`, without containerd. OUT_DIR receives the index manifest
// (index-manifest.json, exact bytes), its descriptor (index-descriptor.json) and every blob it references.
func cmdCreate(args []string) error {
	fs := flag.NewFlagSet("create", flag.ContinueOnError)
	span := fs.Int64("span-size", 4<<20, "span size")
	minLayer := fs.Int64("min-layer-size", 10<<20, "minimum layer size")
	platform := fs.String("platform", "", "platform (default: this machine's)")
	var optimizations multiFlag
	fs.Var(&optimizations, "optimizations", "optimization to enable (repeatable)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 2 {
		return errors.New("usage: soci-golden create [flags] SRC_LAYOUT OUT_DIR")
	}
	ctx := context.Background()

	work, err := os.MkdirTemp("", "soci-golden-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	layout := filepath.Join(work, "layout")
	// upstream writes into the store it reads from; work on a copy so the source stays untouched
	if err := os.CopyFS(layout, os.DirFS(fs.Arg(0))); err != nil {
		return fmt.Errorf("copy layout: %w", err)
	}
	target, err := singleLayoutTarget(layout)
	if err != nil {
		return err
	}
	contentStore, err := local.NewStore(layout)
	if err != nil {
		return err
	}
	orasStore, err := oci.New(layout)
	if err != nil {
		return err
	}
	root := filepath.Join(work, "root")
	if err := os.MkdirAll(root, 0o700); err != nil {
		return err
	}
	db, err := soci.NewDB(soci.ArtifactsDbPath(root))
	if err != nil {
		return err
	}
	var opts []soci.Optimization
	for _, o := range optimizations {
		parsed, err := soci.ParseOptimization(o)
		if err != nil {
			return err
		}
		opts = append(opts, parsed)
	}
	builder, err := soci.NewIndexBuilder(contentStore, &store.SociStore{Store: orasStore},
		soci.WithSpanSize(*span),
		soci.WithMinLayerSize(*minLayer),
		soci.WithBuildToolIdentifier(buildToolIdentifier),
		soci.WithOptimizations(opts),
		soci.WithArtifactsDb(db),
	)
	if err != nil {
		return err
	}
	p := platforms.DefaultSpec()
	if *platform != "" {
		if p, err = platforms.Parse(*platform); err != nil {
			return err
		}
	}
	// upstream's progress lines go to stdout; keep stdout for our JSON
	stdout := os.Stdout
	os.Stdout = os.Stderr
	built, err := builder.Build(ctx, images.Image{Name: fs.Arg(0), Target: target}, soci.WithPlatform(p))
	os.Stdout = stdout
	if err != nil {
		return fmt.Errorf("build soci index: %w", err)
	}

	out := fs.Arg(1)
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	manifest, err := os.ReadFile(blobPath(layout, built.Desc.Digest.String()))
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(out, "index-manifest.json"), manifest, 0o644); err != nil {
		return err
	}
	descJSON, err := json.Marshal(built.Desc)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(out, "index-descriptor.json"), descJSON, 0o644); err != nil {
		return err
	}
	refs := append([]ocispec.Descriptor{built.Index.Config}, built.Index.Blobs...)
	for _, d := range refs {
		if err := copyBlob(layout, out, d.Digest.String()); err != nil {
			return err
		}
	}
	return printJSON(map[string]any{
		"upstream":   upstreamVersion(),
		"descriptor": built.Desc,
		"manifest":   target,
	})
}

// singleLayoutTarget returns the one descriptor index.json names (an image manifest or an image index).
func singleLayoutTarget(layout string) (ocispec.Descriptor, error) {
	data, err := os.ReadFile(filepath.Join(layout, "index.json"))
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	var idx ocispec.Index
	if err := json.Unmarshal(data, &idx); err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("index.json: %w", err)
	}
	if len(idx.Manifests) != 1 {
		return ocispec.Descriptor{}, fmt.Errorf("index.json names %d manifests, want exactly 1", len(idx.Manifests))
	}
	return idx.Manifests[0], nil
}

func blobPath(layout, digest string) string {
	alg, enc, _ := strings.Cut(digest, ":")
	return filepath.Join(layout, "blobs", alg, enc)
}

func copyBlob(fromLayout, toLayout, digest string) error {
	data, err := os.ReadFile(blobPath(fromLayout, digest))
	if err != nil {
		return err
	}
	dst := blobPath(toLayout, digest)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	return os.WriteFile(dst, data, 0o644)
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }
