-- JaSMIn annual report (seed 000, table 1): registrants by disease name (80 names).
-- JaSMIn 年次報告: 疾患別登録者数（表 1）
-- Names and groups of the codes: table jasmin_disease, joined by the report.
SELECT jasmin_code, COUNT(DISTINCT pid) AS registrants
FROM jasmin_registrant
GROUP BY jasmin_code
ORDER BY jasmin_code
