-- Patients with a clinical survey record (new or renewal) in the fiscal year, all diseases.
-- 当該年度に臨床調査個人票（新規・更新）のある患者数（全疾病）
SELECT COUNT(DISTINCT pid) AS n
FROM nanbyo_survey
WHERE fiscal_year = {fy}
