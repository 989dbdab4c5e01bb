// Read a DICOM SR the way OHIF does: @cornerstonejs/adapters' MeasurementReport.generateToolState (dcmjs parses the
// file). Prints one JSON object per measurement: tool, image (SOP Instance UID), points in image pixels
// (column, row), label, finding, finding sites, tracking UID. Usage: node read_sr.mjs SR.dcm IMAGES.json
// IMAGES.json: {"<SOP Instance UID>": {"rows": R, "columns": C}} of the mammograms the SR refers to; each becomes an
// image id with the plane a viewer gives a projection image (origin 0, rows along y, 1 mm pixels).
import { readFileSync } from 'node:fs';
import * as core from '@cornerstonejs/core';
import { adaptersSR } from '@cornerstonejs/adapters';
import dcmjs from 'dcmjs';

const [srPath, imagesPath] = process.argv.slice(2);
const images = JSON.parse(readFileSync(imagesPath, 'utf8'));
const imageIdOf = {};
const planes = {};
for (const [sop, { rows, columns }] of Object.entries(images)) {
  const imageId = `birads:${sop}`;
  imageIdOf[`${sop}:1`] = imageId;
  planes[imageId] = {
    frameOfReferenceUID: `for-${sop}`, rows, columns, imagePositionPatient: [0, 0, 0],
    rowCosines: [1, 0, 0], columnCosines: [0, 1, 0], rowPixelSpacing: 1, columnPixelSpacing: 1,
    imageOrientationPatient: [1, 0, 0, 0, 1, 0], pixelSpacing: [1, 1],
  };
}
core.metaData.addProvider((type, imageId) => (type === 'imagePlaneModule' ? planes[imageId] : undefined), 10000);

const buffer = readFileSync(srPath);
const dicom = dcmjs.data.DicomMessage.readFile(buffer.buffer.slice(buffer.byteOffset, buffer.byteOffset + buffer.length));
const dataset = dcmjs.data.DicomMetaDictionary.naturalizeDataset(dicom.dict);
const { MeasurementReport } = adaptersSR.Cornerstone3D;
const state = MeasurementReport.generateToolState(dataset, imageIdOf, core.metaData);
const out = [];
for (const [tool, measurements] of Object.entries(state)) {
  for (const m of measurements) {
    const imageId = m.annotation.metadata.referencedImageId;
    const world = m.annotation.data.handles?.points?.length ? m.annotation.data.handles.points
      : (m.annotation.data.contour?.polyline ?? []);
    out.push({
      tool,
      image: imageId ? imageId.replace('birads:', '') : null,
      points: world.map(p => core.utilities.worldToImageCoords(imageId, p)),
      label: m.annotation.data.label ?? null,
      finding: m.finding?.CodeMeaning ?? null,
      findingSites: (m.findingSites ?? []).map(s => s.CodeMeaning),
      trackingUID: m.TrackingUniqueIdentifier ?? null,
    });
  }
}
process.stdout.write(JSON.stringify(out));
