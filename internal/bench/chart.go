package bench

import (
	"bytes"
	"errors"
	"fmt"
	"image/color"
	"math"
	"os"
	"path/filepath"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/text"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// Chart layout: one panel per figure (its own unit on its own axis),
// panelCols panels a row (appsCols for the many application figures).
const (
	panelW    = 3.4 * vg.Inch
	panelH    = 2.6 * vg.Inch
	panelCols = 3
	appsCols  = 4
	chartDPI  = 96
	headerH   = 0.55 * vg.Inch
	// titleWrap is where a panel title is broken into lines.
	titleWrap = 42
)

// modeColors: the Okabe-Ito palette, which stays apart for colour-blind
// readers and in greyscale.
var modeColors = map[string]color.Color{
	ModeHost:    color.RGBA{R: 0x99, G: 0x99, B: 0x99, A: 0xff},
	ModeOverlay: color.RGBA{R: 0xe6, G: 0x9f, B: 0x00, A: 0xff},
	ModeSlim:    color.RGBA{R: 0x00, G: 0x72, B: 0xb2, A: 0xff},
}

// groupTitles head the charts.
var groupTitles = map[string]string{
	GroupThroughput: "Throughput",
	GroupLatency:    "Request/response latency",
	GroupSetup:      "Connection setup",
	GroupCPU:        "CPU time per unit of work (whole machine)",
	GroupApps:       "Applications",
	GroupCPUSides:   "CPU time per unit of work, per side (cgroups)",
}

// WriteCharts draws r's figures as PNG bar charts into dir (made if
// needed), one file per figure group (bench-<group>.png): a panel per
// figure with each mode's median as a bar and its min–max as an error
// bar. It returns the files written.
func WriteCharts(r *Report, dir string) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var files []string
	for _, g := range Groups {
		var figs []Figure
		for _, f := range r.Figures {
			if figureGroup(f) == g {
				figs = append(figs, f)
			}
		}
		if len(figs) == 0 {
			continue
		}
		png, err := groupChart(r, g, figs)
		if err != nil {
			return files, fmt.Errorf("chart %s: %w", g, err)
		}
		path := filepath.Join(dir, "bench-"+g+".png")
		if err := os.WriteFile(path, png, 0o644); err != nil {
			return files, err
		}
		files = append(files, path)
	}
	if len(files) == 0 {
		return nil, errors.New("charts: the report has no figures")
	}
	return files, nil
}

// figureGroup is f's group; reports from before groups existed have
// none, and get the group their figure has now.
func figureGroup(f Figure) string {
	if f.Group != "" {
		return f.Group
	}
	for _, d := range figureDefs {
		if d.id == f.ID {
			return d.group
		}
	}
	return ""
}

// groupChart draws one group's panels into a PNG.
func groupChart(r *Report, group string, figs []Figure) ([]byte, error) {
	cols := min(panelCols, len(figs))
	if group == GroupApps {
		cols = min(appsCols, len(figs))
	}
	rows := (len(figs) + cols - 1) / cols
	plots := make([][]*plot.Plot, rows)
	for i := range plots {
		plots[i] = make([]*plot.Plot, cols)
	}
	for i, f := range figs {
		p, err := panel(r, f)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f.ID, err)
		}
		plots[i/cols][i%cols] = p
	}
	w, h := vg.Length(cols)*panelW, vg.Length(rows)*panelH+headerH
	img := vgimg.NewWith(vgimg.UseWH(w, h), vgimg.UseDPI(chartDPI), vgimg.UseBackgroundColor(color.White))
	dc := draw.New(img)

	title := fmt.Sprintf("slimctl bench: %s, host vs overlay vs slim", groupTitles[group])
	sub := fmt.Sprintf("bars: median of %d runs; whiskers: min–max. %d × %s, Linux %s, %s",
		r.Settings.Runs, r.Machine.CPUs, r.Machine.CPUModel, r.Machine.Kernel, r.Started.Format("2006-01-02"))
	header := text.Style{Color: color.Black, Font: plot.DefaultFont, Handler: plot.DefaultTextHandler, XAlign: draw.XLeft}
	header.Font.Size = vg.Points(14)
	dc.FillText(header, vg.Point{X: 0.15 * vg.Inch, Y: h - 0.3*vg.Inch}, title)
	header.Font.Size = vg.Points(9)
	dc.FillText(header, vg.Point{X: 0.15 * vg.Inch, Y: h - 0.48*vg.Inch}, sub)

	body := draw.Crop(dc, 0, 0, 0, -headerH)
	tiles := draw.Tiles{Rows: rows, Cols: cols, PadX: 0.1 * vg.Inch, PadY: 0.1 * vg.Inch,
		PadTop: 0.05 * vg.Inch, PadBottom: 0.05 * vg.Inch, PadLeft: 0.05 * vg.Inch, PadRight: 0.1 * vg.Inch}
	canvases := plot.Align(plots, tiles, body)
	for j := range plots {
		for i, p := range plots[j] {
			if p != nil {
				p.Draw(canvases[j][i])
			}
		}
	}
	var b bytes.Buffer
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(&b); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// panel is one figure's bar chart: a bar per mode.
func panel(r *Report, f Figure) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = wrap(f.Name, titleWrap) + "\n" + ratioLine(f)
	p.Title.TextStyle.Font.Size = vg.Points(9)
	p.Y.Label.Text = f.Unit
	p.Y.Label.TextStyle.Font.Size = vg.Points(8)
	p.Y.Tick.Label.Font.Size = vg.Points(7)
	p.X.Tick.Label.Font.Size = vg.Points(8)
	p.Y.Min = 0
	p.Y.Tick.Marker = plainTicks{}
	modes := r.Modes
	var top float64
	var labels plotter.XYLabels
	for i, mode := range modes {
		s := f.Results[mode]
		v := 0.0
		if s.Runs > 0 {
			v = s.Median
		}
		bars, err := plotter.NewBarChart(plotter.Values{v}, 0.45*vg.Inch)
		if err != nil {
			return nil, err
		}
		bars.XMin = float64(i)
		bars.Color = modeColors[mode]
		bars.LineStyle.Width = 0
		p.Add(bars)
		label := "-"
		if s.Runs > 0 {
			label = FormatValue(s.Median)
			errs := struct {
				plotter.XYs
				plotter.YErrors
			}{plotter.XYs{{X: float64(i), Y: s.Median}}, plotter.YErrors{{Low: s.Median - s.Min, High: s.Max - s.Median}}}
			eb, err := plotter.NewYErrorBars(errs)
			if err != nil {
				return nil, err
			}
			eb.LineStyle.Width = vg.Points(1)
			p.Add(eb)
			top = math.Max(top, s.Max)
		}
		labels.XYs = append(labels.XYs, plotter.XY{X: float64(i), Y: 0})
		labels.Labels = append(labels.Labels, label)
	}
	if top <= 0 {
		top = 1
	}
	// The median's value above the whiskers' top, 6% of the axis up.
	for i := range labels.XYs {
		labels.XYs[i].Y = top * 1.06
	}
	l, err := plotter.NewLabels(labels)
	if err != nil {
		return nil, err
	}
	for i := range l.TextStyle {
		l.TextStyle[i].Font.Size = vg.Points(7)
		l.TextStyle[i].XAlign = draw.XCenter
	}
	p.Add(l)
	p.Y.Max = top * 1.18
	p.NominalX(modes...)
	p.X.Min, p.X.Max = -0.6, float64(len(modes))-0.4
	return p, nil
}

// plainTicks are plot's default ticks labelled as the table prints
// numbers (25000, not 25000.00).
type plainTicks struct{}

func (plainTicks) Ticks(lo, hi float64) []plot.Tick {
	ts := plot.DefaultTicks{}.Ticks(lo, hi)
	for i := range ts {
		if ts[i].Label != "" {
			ts[i].Label = FormatValue(ts[i].Value)
		}
	}
	return ts
}

// ratioLine prints a figure's ratios to host and overlay, for the title.
func ratioLine(f Figure) string {
	var parts []string
	for _, k := range []string{ModeSlim + "/" + ModeHost, ModeSlim + "/" + ModeOverlay} {
		if v, ok := f.Ratios[k]; ok {
			parts = append(parts, k+" "+FormatValue(v))
		}
	}
	if len(parts) == 0 {
		return "(no ratio)"
	}
	return strings.Join(parts, ", ")
}

// wrap breaks s into lines of at most n characters, at spaces.
func wrap(s string, n int) string {
	var lines []string
	line := ""
	for w := range strings.FieldsSeq(s) {
		if line != "" && len(line)+1+len(w) > n {
			lines = append(lines, line)
			line = w
			continue
		}
		if line != "" {
			line += " "
		}
		line += w
	}
	return strings.Join(append(lines, line), "\n")
}
